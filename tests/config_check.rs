//! `abgate check`: every shipped config is valid; a bad config gets every error at once,
//! each with file, line, key path and what would be valid; exit codes as docs/operations.md gives them.

mod common;

use common::{ExperimentSpec, TestConfig};
use std::process::Command;

fn check(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_abgate"))
        .arg("check")
        .arg(&p)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn shipped_configs_are_valid() {
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/configs")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let out = Command::new(env!("CARGO_BIN_EXE_abgate"))
            .arg("check")
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

const BAD: &str = r#"[upstream.model_a]
addrs = ["127.0.0.1:9001"]

[routing]
default_upstream = "model_a"

[events]
flush_interval = "soon"

[[layer]]
name = "model"
  [[layer.experiment]]
  name = "exp"
  traffic = 0.7
  colour = "blue"
    [[layer.experiment.variant]]
    name = "control"
    weight = 50
    upstream = "model_z"
    [[layer.experiment.variant]]
    name = "treatment"
    weight = -1
    headers = { "bad header" = "v2" }
  [[layer.experiment]]
  name = "exp"
  traffic = 0.6
    [[layer.experiment.variant]]
    name = "a"
    weight = 1
    [[layer.experiment.variant]]
    name = "b"
    weight = 1
"#;

#[test]
fn check_reports_every_error_with_line_and_key_path() {
    let (code, out) = check(BAD);
    assert_eq!(code, 1, "{out}");
    let expect = [
        // (line, key path, part of the message)
        ("bad.toml:8:", "events.flush_interval", "not a duration"),
        (
            "bad.toml:15:",
            "layer[0].experiment[0].colour",
            "unknown key `colour`",
        ),
        (
            "bad.toml:19:",
            "layer[0].experiment[0].variant[0].upstream",
            "unknown upstream `model_z` (valid: model_a)",
        ),
        (
            "bad.toml:22:",
            "layer[0].experiment[0].variant[1].weight",
            "must be a positive number",
        ),
        (
            "bad.toml:23:",
            "layer[0].experiment[0].variant[1].headers.bad header",
            "not a valid HTTP header name",
        ),
        (
            "bad.toml:25:",
            "layer[0].experiment[1].name",
            "defined twice",
        ),
        (
            "bad.toml:26:",
            "layer[0].experiment[1].traffic",
            "at most 1.0",
        ),
    ];
    for (line, path, msg) in expect {
        let found = out
            .lines()
            .any(|l| l.contains(line) && l.contains(path) && l.contains(msg));
        assert!(found, "missing `{line} {path}: …{msg}…` in:\n{out}");
    }
    assert!(out.contains("errors in config"), "{out}");
}

#[test]
fn syntax_errors_are_located() {
    let (code, out) = check("[server]\nthreads = \n");
    assert_eq!(code, 1);
    assert!(out.contains("bad.toml:2:"), "{out}");
}

#[test]
fn overlapping_routing_layers_are_rejected() {
    // Layer `one` routes requests under /v1/; layer `two` every request, or with
    // `two_prefix` only those under it.
    let config = |two_prefix: Option<&str>| {
        let routed = |name: &str| {
            ExperimentSpec::new(name, 1.0)
                .variant_with("control", 1.0, Some("a"), &[])
                .variant_with("t", 1.0, Some("b"), &[])
        };
        let y = match two_prefix {
            Some(p) => routed("y").targeting(&format!("path_prefix = \"{p}\"")),
            None => routed("y"),
        };
        TestConfig::bare()
            .upstream("a", &["127.0.0.1:1"])
            .upstream("b", &["127.0.0.1:2"])
            .experiment("one", routed("x").targeting("path_prefix = \"/v1/\""))
            .experiment("two", y)
            .toml()
    };
    let (code, out) = check(&config(None));
    assert_eq!(code, 1);
    assert!(out.contains("could both route the same request"), "{out}");
    // Disjoint prefixes are fine.
    let (code, out) = check(&config(Some("/v2/")));
    assert_eq!(code, 0, "{out}");
}

#[test]
fn missing_file_is_exit_1_with_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_abgate"))
        .args(["check", "/nonexistent/abgate.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the file"));
}

/// Exposure names are made at config compile: each variant served itself, and served by
/// control (rollback, pause); the pre-encoded JSON says the same as the names.
#[test]
fn exposure_names_are_made_per_variant_and_served_variant() {
    let cfg = TestConfig::bare()
        .upstream("a", &["127.0.0.1:1"])
        .experiment(
            "model",
            ExperimentSpec::new("ranker", 1.0)
                .variant("b", 1.0)
                .variant("control", 1.0)
                .variant("c-2", 1.0),
        )
        .parse();
    let layer = &cfg.layers[0];
    let exp = &layer.experiments[0];
    assert_eq!(exp.control, 1);
    let json = |v: usize, served: usize| {
        let n = exp.exposure_names(&layer.name, v, served);
        assert_eq!(&*n.variant, &*exp.variants[v].name);
        assert_eq!(&*n.served, &*exp.variants[served].name);
        let mut s = String::from_utf8(n.json().to_vec()).unwrap();
        s.push('}');
        serde_json::from_str::<serde_json::Value>(&s).unwrap()
    };
    let want = |variant: &str, served: &str| serde_json::json!({"layer": "model", "experiment": "ranker", "variant": variant, "served": served});
    assert_eq!(json(0, 0), want("b", "b"));
    assert_eq!(json(0, 1), want("b", "control"));
    assert_eq!(json(2, 1), want("c-2", "control"));
    // any other pair (never made by the request path) is built on demand, still right
    assert_eq!(json(0, 2), want("b", "c-2"));
}

#[test]
fn a_duration_that_would_overflow_a_deadline_fails_check_with_its_line() {
    // It passed `check` once and then crashed the process at SIGTERM (deadline overflow).
    let (code, out) = check("[server]\nshutdown_timeout = \"18446744073709551615s\"\n");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("bad.toml:2:"), "{out}");
    assert!(out.contains("server.shutdown_timeout"), "{out}");
    assert!(out.contains("longer than the largest duration"), "{out}");
}
