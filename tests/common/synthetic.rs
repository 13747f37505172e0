//! The synthetic event log of the analysis tests (`analyze_e2e.rs`, `analyze_sql.rs`):
//! three 50/50 experiments with a known effect, a known null and a known sample ratio
//! mismatch, an outcome logged before its unit's exposure, a unit seen in both variants
//! and a torn last line.

use super::{ExperimentSpec, TestConfig};
use std::fmt::Write as _;

/// Three layers of one 50/50 experiment each, `effect`, `null` and `srm`, all on the
/// primary metric `conversion` (`effect` also on `revenue`); no routing.
pub fn config() -> TestConfig {
    let ab = |name: &str| {
        ExperimentSpec::new(name, 1.0)
            .primary_metric("conversion")
            .variant("control", 1.0)
            .variant("treatment", 1.0)
    };
    TestConfig::bare()
        .upstream("a", &["127.0.0.1:1"])
        .metric("conversion", "binomial")
        .metric("revenue", "continuous")
        .experiment("l1", ab("effect").metrics(&["revenue"]))
        .experiment("l2", ab("null"))
        .experiment("l3", ab("srm"))
}

pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub fn exposure(
    out: &mut String,
    ts: &str,
    unit: &str,
    exp: &str,
    layer: &str,
    variant: &str,
    latency: f64,
) {
    let _ = writeln!(
        out,
        r#"{{"type":"exposure","ts":"{ts}","request_id":"x","unit":"user","unit_id":"{unit}","assignments":[{{"layer":"{layer}","experiment":"{exp}","variant":"{variant}","served":"{variant}"}}],"holdout":false,"upstream":"a","status":200,"latency_ms":{latency},"error":null,"config_version":"v"}}"#
    );
}

pub fn outcome(out: &mut String, ts: &str, unit: &str, metric: &str, value: f64) {
    let _ = writeln!(
        out,
        r#"{{"type":"outcome","ts":"{ts}","unit_id":"{unit}","metric":"{metric}","value":{value},"source":"api"}}"#
    );
}

/// A temp dir with the config (`abgate.toml`) and the synthetic log (`events-1.jsonl`).
pub fn synthetic() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    config().write(dir.path());
    let mut rng = Rng(42);
    let mut s = String::new();
    // An outcome before any exposure of unit "early": must be ignored.
    outcome(
        &mut s,
        "2026-11-01T00:00:00.000000Z",
        "early",
        "conversion",
        1.0,
    );
    for i in 0..8000 {
        let treat = i % 2 == 1;
        let v = if treat { "treatment" } else { "control" };
        let ts = format!("2026-11-01T{:02}:00:00.000000Z", 1 + i / 1000);
        // effect: 10% vs 13% conversion
        let u = format!("e{i}");
        exposure(&mut s, &ts, &u, "effect", "l1", v, 10.0 + rng.next());
        if rng.next() < if treat { 0.13 } else { 0.10 } {
            outcome(&mut s, &ts, &u, "conversion", 1.0);
            outcome(&mut s, &ts, &u, "revenue", 20.0 + 10.0 * rng.next());
        }
        // null: 10% vs 10%
        let u = format!("n{i}");
        exposure(&mut s, &ts, &u, "null", "l2", v, 10.0 + rng.next());
        if rng.next() < 0.10 {
            outcome(&mut s, &ts, &u, "conversion", 1.0);
        }
    }
    // srm: 5000 control vs 4500 treatment with 50/50 weights
    for i in 0..9500 {
        let v = if i < 5000 { "control" } else { "treatment" };
        exposure(
            &mut s,
            "2026-11-01T09:00:00.000000Z",
            &format!("s{i}"),
            "srm",
            "l3",
            v,
            10.0,
        );
    }
    // the early unit's exposure comes after its outcome
    exposure(
        &mut s,
        "2026-11-01T10:00:00.000000Z",
        "early",
        "null",
        "l2",
        "control",
        10.0,
    );
    // a unit seen in both variants: excluded and counted
    exposure(
        &mut s,
        "2026-11-01T10:00:00.000000Z",
        "n0",
        "null",
        "l2",
        "treatment",
        10.0,
    );
    // and a torn last line
    s.push_str(r#"{"type":"exposure","ts":"2026-11-01T10:00:00"#);
    std::fs::write(dir.path().join("events-1.jsonl"), s).unwrap();
    dir
}
