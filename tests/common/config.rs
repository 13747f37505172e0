//! The one way tests (and `benches/hot_paths.rs`) write an abgate config: a small typed
//! builder that produces TOML text, so every config states only what its test is about.
//!
//! Two starting points:
//! - [`TestConfig::new`] for a config a test serves: both listeners on `127.0.0.1:0`
//!   (parallel-safe), 2 threads, a 5 s shutdown timeout, events (flushed every 50 ms) and
//!   state under the given directory;
//! - [`TestConfig::bare`] for a config that is only parsed or analyzed: nothing but what
//!   the test adds (every other key takes abgate's default).
//!
//! Setting a key that a table already has replaces it in place, so a test can change
//! one default or one key of a preset (`.server("threads = 1")`); [`TestConfig::unset`]
//! drops one. Unless `[routing]` is set, the first upstream is the default upstream.
//!
//! This file uses nothing from the rest of `tests/common`: the bench includes it by path.

use std::fmt::{Display, Write as _};
use std::path::{Path, PathBuf};

/// Stands for the test's temp dir in config text; `start` replaces it.
pub const DIR_PLACEHOLDER: &str = "{DIR}";

/// A config under construction; [`TestConfig::toml`] writes it.
#[derive(Debug, Clone, Default)]
pub struct TestConfig {
    /// `[server]`, `[admin]`, `[upstream.NAME]`, `[routing]`, … in the order first set.
    tables: Vec<(String, Lines)>,
    /// `[[metric]]` entries.
    metrics: Vec<Lines>,
    layers: Vec<LayerSpec>,
    /// Appended as written, after everything else.
    raw: Vec<String>,
}

impl TestConfig {
    /// A config with nothing in it.
    pub fn bare() -> TestConfig {
        TestConfig::default()
    }

    /// A config to serve from `dir` (or from [`DIR_PLACEHOLDER`], for `start` to fill in).
    pub fn new(dir: impl AsRef<Path>) -> TestConfig {
        let dir = dir.as_ref();
        TestConfig::bare()
            .server("listen = [\"127.0.0.1:0\"]")
            .server("threads = 2")
            .server("shutdown_timeout = \"5s\"")
            .admin("listen = \"127.0.0.1:0\"")
            .events(&format!("dir = {}", quote(dir.join("events").display())))
            .events("flush_interval = \"50ms\"")
            .state(&format!("dir = {}", quote(dir.join("state").display())))
    }

    /// Set `key = value` lines (one or several, newline-separated) in table `table`
    /// (`"server"`, `"upstream.model_a"`, …); a key the table has is replaced in place.
    pub fn set(mut self, table: &str, lines: &str) -> TestConfig {
        match self.tables.iter_mut().find(|(name, _)| name == table) {
            Some((_, t)) => t.set(lines),
            None => {
                let mut t = Lines::default();
                t.set(lines);
                self.tables.push((table.to_string(), t));
            }
        }
        self
    }

    /// Remove `key` from `table` (a default of [`TestConfig::new`] a test must not set).
    pub fn unset(mut self, table: &str, key: &str) -> TestConfig {
        if let Some((_, t)) = self.tables.iter_mut().find(|(name, _)| name == table) {
            t.0.retain(|(k, _)| k != key);
        }
        self
    }

    /// `[server]` lines.
    pub fn server(self, lines: &str) -> TestConfig {
        self.set("server", lines)
    }

    /// `[admin]` lines.
    pub fn admin(self, lines: &str) -> TestConfig {
        self.set("admin", lines)
    }

    /// `[identity]` lines.
    pub fn identity(self, lines: &str) -> TestConfig {
        self.set("identity", lines)
    }

    /// `[events]` lines.
    pub fn events(self, lines: &str) -> TestConfig {
        self.set("events", lines)
    }

    /// `[state]` lines.
    pub fn state(self, lines: &str) -> TestConfig {
        self.set("state", lines)
    }

    /// `[upstream.NAME]` with these addresses (replacing its addresses if it exists).
    pub fn upstream(self, name: &str, addrs: &[impl Display]) -> TestConfig {
        self.upstream_with(name, addrs, &[])
    }

    /// `[upstream.NAME]` with these addresses and `extra` lines (`read_timeout = "1s"`).
    pub fn upstream_with(self, name: &str, addrs: &[impl Display], extra: &[&str]) -> TestConfig {
        let list: Vec<String> = addrs.iter().map(quote).collect();
        let table = format!("upstream.{name}");
        let mut c = self.set(&table, &format!("addrs = [{}]", list.join(", ")));
        for line in extra {
            c = c.set(&table, line);
        }
        c
    }

    /// `[routing] default_upstream` (without it: the first upstream).
    pub fn default_upstream(self, name: &str) -> TestConfig {
        self.set("routing", &format!("default_upstream = {}", quote(name)))
    }

    /// `[holdout]`: `traffic` of the units in no experiment, hashed with `salt`.
    pub fn holdout(self, traffic: f64, salt: &str) -> TestConfig {
        self.set("holdout", &format!("traffic = {traffic}"))
            .set("holdout", &format!("salt = {}", quote(salt)))
    }

    /// A `[[metric]]` of `kind` (`binomial` or `continuous`).
    pub fn metric(self, name: &str, kind: &str) -> TestConfig {
        self.metric_with(name, kind, &[])
    }

    /// A `[[metric]]` with `extra` lines (`from_response_header = "x-tokens"`).
    pub fn metric_with(mut self, name: &str, kind: &str, extra: &[&str]) -> TestConfig {
        let mut m = Lines::default();
        m.set(&format!("name = {}", quote(name)));
        m.set(&format!("kind = {}", quote(kind)));
        for line in extra {
            m.set(line);
        }
        self.metrics.push(m);
        self
    }

    /// Add a `[[layer]]`, or replace the layer of the same name.
    pub fn layer(mut self, layer: LayerSpec) -> TestConfig {
        match self.layers.iter_mut().find(|l| l.name == layer.name) {
            Some(l) => *l = layer,
            None => self.layers.push(layer),
        }
        self
    }

    /// Add an experiment to layer `layer` (made if there is none of that name yet).
    pub fn experiment(mut self, layer: &str, experiment: ExperimentSpec) -> TestConfig {
        if !self.layers.iter().any(|l| l.name == layer) {
            self.layers.push(LayerSpec::new(layer));
        }
        let l = self.layers.iter_mut().find(|l| l.name == layer).unwrap();
        l.experiments.push(experiment);
        self
    }

    /// Set `guardrails = { TABLE }` on experiment `experiment`, e.g.
    /// `min_requests = 100, error_rate = { max_increase = 0.02 }`.
    pub fn guardrails(self, experiment: &str, table: &str) -> TestConfig {
        self.experiment_line(experiment, &format!("guardrails = {{ {table} }}"))
    }

    /// Set `key = value` lines on experiment `experiment` (blank: nothing).
    pub fn experiment_line(mut self, experiment: &str, lines: &str) -> TestConfig {
        self.experiment_mut(experiment).lines.set(lines);
        self
    }

    /// Change the variant weights of experiment `experiment`, in variant order.
    pub fn weights(mut self, experiment: &str, weights: &[f64]) -> TestConfig {
        let e = self.experiment_mut(experiment);
        assert_eq!(e.variants.len(), weights.len(), "variants of {experiment}");
        for (v, w) in e.variants.iter_mut().zip(weights) {
            v.weight = *w;
        }
        self
    }

    /// TOML appended as written, after everything else; start it with a table header.
    pub fn raw(mut self, text: &str) -> TestConfig {
        self.raw.push(text.to_string());
        self
    }

    /// The config text.
    pub fn toml(&self) -> String {
        let mut out = String::new();
        for (name, lines) in &self.tables {
            let _ = writeln!(out, "[{name}]");
            lines.write(&mut out);
        }
        let has_routing = self.tables.iter().any(|(name, _)| name == "routing");
        let first_upstream = self
            .tables
            .iter()
            .find_map(|(name, _)| name.strip_prefix("upstream."));
        if let (false, Some(up)) = (has_routing, first_upstream) {
            let _ = writeln!(out, "[routing]\ndefault_upstream = {}", quote(up));
        }
        for m in &self.metrics {
            out.push_str("[[metric]]\n");
            m.write(&mut out);
        }
        for l in &self.layers {
            l.write(&mut out);
        }
        for r in &self.raw {
            out.push_str(r);
            if !r.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }

    /// The config compiled by abgate; panics with every located error and the text.
    pub fn parse(&self) -> abgate::config::Config {
        let text = self.toml();
        abgate::config::parse_str(&text, Path::new("test.toml"))
            .unwrap_or_else(|e| panic!("{e}\n--- test.toml ---\n{text}"))
    }

    /// Write the text to `dir/abgate.toml`; returns that path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("abgate.toml");
        std::fs::write(&path, self.toml()).unwrap();
        path
    }

    fn experiment_mut(&mut self, name: &str) -> &mut ExperimentSpec {
        self.layers
            .iter_mut()
            .flat_map(|l| l.experiments.iter_mut())
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no experiment {name} in the test config"))
    }
}

/// A `[[layer]]`.
#[derive(Debug, Clone)]
pub struct LayerSpec {
    name: String,
    lines: Lines,
    experiments: Vec<ExperimentSpec>,
}

impl LayerSpec {
    /// A layer named `name` (its salt defaults to the name).
    pub fn new(name: &str) -> LayerSpec {
        LayerSpec {
            name: name.to_string(),
            lines: Lines::default(),
            experiments: Vec::new(),
        }
    }

    /// The salt of the layer hash.
    pub fn salt(mut self, salt: &str) -> LayerSpec {
        self.lines.set(&format!("salt = {}", quote(salt)));
        self
    }

    /// Add an experiment.
    pub fn experiment(mut self, experiment: ExperimentSpec) -> LayerSpec {
        self.experiments.push(experiment);
        self
    }

    fn write(&self, out: &mut String) {
        let _ = writeln!(out, "[[layer]]\nname = {}", quote(&self.name));
        self.lines.write(out);
        for e in &self.experiments {
            e.write(out);
        }
    }
}

/// A `[[layer.experiment]]` and its variants.
#[derive(Debug, Clone)]
pub struct ExperimentSpec {
    name: String,
    traffic: f64,
    lines: Lines,
    variants: Vec<VariantSpec>,
}

#[derive(Debug, Clone)]
struct VariantSpec {
    name: String,
    weight: f64,
    upstream: Option<String>,
    headers: Vec<(String, String)>,
}

impl ExperimentSpec {
    /// Experiment `name` on `traffic` (a share, 0 to 1) of its layer.
    pub fn new(name: &str, traffic: f64) -> ExperimentSpec {
        ExperimentSpec {
            name: name.to_string(),
            traffic,
            lines: Lines::default(),
            variants: Vec::new(),
        }
    }

    /// The salt of the variant hash (defaults to the name).
    pub fn salt(self, salt: &str) -> ExperimentSpec {
        self.line(&format!("salt = {}", quote(salt)))
    }

    /// `primary_metric`.
    pub fn primary_metric(self, metric: &str) -> ExperimentSpec {
        self.line(&format!("primary_metric = {}", quote(metric)))
    }

    /// Secondary `metrics`.
    pub fn metrics(self, metrics: &[&str]) -> ExperimentSpec {
        let list: Vec<String> = metrics.iter().map(quote).collect();
        self.line(&format!("metrics = [{}]", list.join(", ")))
    }

    /// `targeting = { TABLE }`, e.g. `path_prefix = "/v1/"`.
    pub fn targeting(self, table: &str) -> ExperimentSpec {
        self.line(&format!("targeting = {{ {table} }}"))
    }

    /// `guardrails = { TABLE }`, e.g. `min_requests = 100, error_rate = { max_increase = 0.02 }`.
    pub fn guardrails(self, table: &str) -> ExperimentSpec {
        self.line(&format!("guardrails = {{ {table} }}"))
    }

    /// Any other `key = value` lines of the experiment.
    pub fn line(mut self, lines: &str) -> ExperimentSpec {
        self.lines.set(lines);
        self
    }

    /// A variant that adds no header and leaves routing to other layers.
    pub fn variant(self, name: &str, weight: f64) -> ExperimentSpec {
        self.variant_with(name, weight, None, &[])
    }

    /// A variant served by `upstream` (if any) that adds `headers` to backend requests.
    pub fn variant_with(
        mut self,
        name: &str,
        weight: f64,
        upstream: Option<&str>,
        headers: &[(&str, &str)],
    ) -> ExperimentSpec {
        self.variants.push(VariantSpec {
            name: name.to_string(),
            weight,
            upstream: upstream.map(str::to_string),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        });
        self
    }

    fn write(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "[[layer.experiment]]\nname = {}\ntraffic = {}",
            quote(&self.name),
            self.traffic
        );
        self.lines.write(out);
        for v in &self.variants {
            let _ = writeln!(
                out,
                "[[layer.experiment.variant]]\nname = {}\nweight = {}",
                quote(&v.name),
                v.weight
            );
            if let Some(u) = &v.upstream {
                let _ = writeln!(out, "upstream = {}", quote(u));
            }
            if !v.headers.is_empty() {
                let pairs: Vec<String> = v
                    .headers
                    .iter()
                    .map(|(k, v)| format!("{} = {}", quote(k), quote(v)))
                    .collect();
                let _ = writeln!(out, "headers = {{ {} }}", pairs.join(", "));
            }
        }
    }
}

/// The shared two-backend setup: upstreams `model_a` (at `a`) and `model_b` (at `b`, 500 ms
/// connect timeout); metrics `conversion` (binomial) and `tokens` (continuous, from the
/// backend's `x-tokens-generated`); identity from `x-user-id` or the `abgate_uid` cookie;
/// `x-abgate-variant` on responses; and in layer `model` the 50/50 routing experiment
/// `ranker_v2` (primary metric `conversion`): `control` on model_a, `treatment` on model_b
/// adding `x-model-version: v2`.
pub fn two_backend(dir: impl AsRef<Path>, a: impl Display, b: impl Display) -> TestConfig {
    TestConfig::new(dir)
        .server("debug_header = true")
        .identity("header = \"x-user-id\"\ncookie = \"abgate_uid\"")
        .upstream("model_a", &[a])
        .upstream_with("model_b", &[b], &["connect_timeout = \"500ms\""])
        .metric("conversion", "binomial")
        .metric_with(
            "tokens",
            "continuous",
            &["from_response_header = \"x-tokens-generated\""],
        )
        .layer(
            LayerSpec::new("model").experiment(
                ExperimentSpec::new("ranker_v2", 1.0)
                    .primary_metric("conversion")
                    .variant_with("control", 50.0, Some("model_a"), &[])
                    .variant_with(
                        "treatment",
                        50.0,
                        Some("model_b"),
                        &[("x-model-version", "v2")],
                    ),
            ),
        )
}

/// `key = value` lines of one table, in the order first set.
#[derive(Debug, Clone, Default)]
struct Lines(Vec<(String, String)>);

impl Lines {
    /// Set each non-blank line, replacing a line with the same key.
    fn set(&mut self, lines: &str) {
        for line in lines.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let key = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not a `key = value` line: {line:?}"))
                .0
                .trim()
                .to_string();
            match self.0.iter_mut().find(|(k, _)| *k == key) {
                Some(entry) => entry.1 = line.to_string(),
                None => self.0.push((key, line.to_string())),
            }
        }
    }

    fn write(&self, out: &mut String) {
        for (_, line) in &self.0 {
            out.push_str(line);
            out.push('\n');
        }
    }
}

/// A TOML basic string.
fn quote(s: impl Display) -> String {
    let mut out = String::from('"');
    for c in s.to_string().chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
