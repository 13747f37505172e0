//! The TOML shape of the config file, exactly as users write it.
//!
//! These structs are plain serde targets and nothing more: no defaults are resolved
//! beyond what serde fills in, nothing is validated here. `super::compile` turns a
//! [`RawConfig`] into the immutable [`super::Config`] the proxy runs on.

use serde::Deserialize;
use std::collections::BTreeMap;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    /// `[server]`: proxy listeners and threads.
    #[serde(default)]
    pub server: RawServer,
    /// `[admin]`: admin API and metrics listener.
    #[serde(default)]
    pub admin: RawAdmin,
    /// `[identity]`: where the unit id comes from.
    #[serde(default)]
    pub identity: RawIdentity,
    /// `[events]`: the exposure/outcome log.
    #[serde(default)]
    pub events: RawEvents,
    /// `[state]`: where rollback decisions are persisted.
    #[serde(default)]
    pub state: RawState,
    /// `[upstream.NAME]`: backend pools by name.
    #[serde(default)]
    pub upstream: BTreeMap<String, RawUpstream>,
    /// `[routing]`: where requests outside every routing experiment go.
    pub routing: Option<RawRouting>,
    /// `[holdout]`: optional global holdout.
    pub holdout: Option<RawHoldout>,
    /// `[[metric]]`: declared outcome metrics.
    #[serde(default)]
    pub metric: Vec<RawMetric>,
    /// `[[layer]]`: orthogonal layers of experiments.
    #[serde(default)]
    pub layer: Vec<RawLayer>,
    /// `[fleet]`: share events, decisions and windows through NATS JetStream.
    pub fleet: Option<RawFleet>,
}

/// `[fleet]`
#[derive(Debug, Default, Deserialize)]
pub struct RawFleet {
    /// `nats://host:port` (several: comma-separated).
    pub nats_url: Option<String>,
    /// This sidecar's name, unique in the fleet.
    pub instance: Option<String>,
    /// JetStream stream of the events.
    pub stream: Option<String>,
    /// JetStream key-value bucket of decisions and windows.
    pub bucket: Option<String>,
    /// Ship the local event log to the stream.
    pub ship_events: Option<bool>,
    /// Guardrails judge the sum of every fresh sidecar's windows.
    pub share_windows: Option<bool>,
    /// Unshipped local log kept at most (`"1GiB"`, or bytes).
    pub max_backlog: Option<toml::Value>,
}

/// `[server]`
#[derive(Debug, Default, Deserialize)]
pub struct RawServer {
    /// Proxy listen addresses (`host:port`; port 0 picks a free port).
    pub listen: Option<Vec<String>>,
    /// Worker threads of the proxy runtime.
    pub threads: Option<i64>,
    /// How long a stopping proxy waits for in-flight requests (`"30s"`).
    pub shutdown_timeout: Option<String>,
    /// Add `x-abgate-variant` to responses (debugging; off by default).
    pub debug_header: Option<bool>,
    /// Path of the outcome endpoint on the main listener.
    pub outcome_path: Option<String>,
    /// Keep the case of header names on backend requests as the client wrote them.
    pub preserve_header_case: Option<bool>,
    /// Add `X-Forwarded-For` and `X-Forwarded-Proto` to backend requests.
    pub forwarded: Option<bool>,
    /// Largest request head accepted (`"32KiB"`, or bytes).
    pub max_header_bytes: Option<toml::Value>,
    /// Client connections open at most (default: from the descriptor limit).
    pub max_connections: Option<i64>,
    /// How long an idle HTTP/1.1 client connection waits for its next request (`"75s"`).
    pub keepalive_timeout: Option<String>,
    /// `[server.tls]`: TLS listeners.
    pub tls: Option<RawServerTls>,
}

/// `[server.tls]`
#[derive(Debug, Default, Deserialize)]
pub struct RawServerTls {
    /// TLS listen addresses (`ip:port`).
    pub listen: Option<Vec<String>>,
    /// PEM certificate chain.
    pub cert: Option<String>,
    /// PEM private key.
    pub key: Option<String>,
}

/// `[admin]`
#[derive(Debug, Default, Deserialize)]
pub struct RawAdmin {
    /// Admin listen address.
    pub listen: Option<String>,
    /// Name of the environment variable holding the admin token.
    pub token_env: Option<String>,
    /// Update the per-request metric families.
    pub request_metrics: Option<bool>,
}

/// `[identity]`
#[derive(Debug, Default, Deserialize)]
pub struct RawIdentity {
    /// Trusted request header carrying the user id.
    pub header: Option<String>,
    /// Identity cookie name.
    pub cookie: Option<String>,
    /// Session cookie name (unit `session`).
    pub session_cookie: Option<String>,
    /// Mint an id when none is present.
    pub mint: Option<bool>,
    /// Max-Age of the minted identity cookie.
    pub max_age: Option<String>,
    /// Add `Secure` to minted cookies.
    pub secure: Option<bool>,
}

/// `[events]`
#[derive(Debug, Default, Deserialize)]
pub struct RawEvents {
    /// Directory of the JSON Lines files.
    pub dir: Option<String>,
    /// Rotate when the current file reaches this many bytes.
    pub rotate_bytes: Option<i64>,
    /// Flush buffered events at least this often.
    pub flush_interval: Option<String>,
    /// Capacity of the bounded queue between requests and the writer.
    pub queue: Option<i64>,
    /// Write a keyed hash instead of the raw unit id.
    pub hash_unit_ids: Option<bool>,
    /// Log exposures and outcomes at all.
    pub enabled: Option<bool>,
    /// Environment variable holding the key for `hash_unit_ids`.
    pub hash_key_env: Option<String>,
}

/// `[state]`
#[derive(Debug, Default, Deserialize)]
pub struct RawState {
    /// Directory for rollback decisions.
    pub dir: Option<String>,
}

/// `[upstream.NAME]`
#[derive(Debug, Default, Deserialize)]
pub struct RawUpstream {
    /// `host:port` addresses, balanced round-robin.
    pub addrs: Option<Vec<String>>,
    /// TCP connect timeout.
    pub connect_timeout: Option<String>,
    /// How long to wait for the response header.
    pub read_timeout: Option<String>,
    /// Longest silence inside a streamed body or on an upgraded connection.
    pub idle_timeout: Option<String>,
    /// How often each address is health-checked (TCP connect, without `health_check`).
    pub health_check_interval: Option<String>,
    /// `http1`, `h2c` or `h2`.
    pub protocol: Option<String>,
    /// TLS to the backend.
    pub tls: Option<bool>,
    /// Server name for TLS.
    pub sni: Option<String>,
    /// PEM file of trusted roots for this upstream.
    pub ca: Option<String>,
    /// Verify the backend's certificate.
    pub verify: Option<bool>,
    /// `Host` / `:authority` sent to the backend.
    pub host: Option<String>,
    /// HTTP health check.
    pub health_check: Option<RawHealthCheck>,
    /// `grpc-status` values that count as errors of the variant.
    pub grpc_error_codes: Option<Vec<i64>>,
    /// How often host names in `addrs` are resolved again.
    pub resolve_interval: Option<String>,
}

/// `health_check = { path, interval, expect, failures }`
#[derive(Debug, Default, Deserialize)]
pub struct RawHealthCheck {
    /// Request path.
    pub path: Option<String>,
    /// Period.
    pub interval: Option<String>,
    /// Statuses that mean healthy.
    pub expect: Option<Vec<i64>>,
    /// Consecutive failures that take an address out.
    pub failures: Option<i64>,
}

/// `[routing]`
#[derive(Debug, Default, Deserialize)]
pub struct RawRouting {
    /// Upstream for requests no routing experiment claims.
    pub default_upstream: Option<String>,
}

/// `[holdout]`
#[derive(Debug, Default, Deserialize)]
pub struct RawHoldout {
    /// Share of units held out of every experiment.
    pub traffic: Option<f64>,
    /// Salt of the holdout hash.
    pub salt: Option<String>,
}

/// `[[metric]]`
#[derive(Debug, Default, Deserialize)]
pub struct RawMetric {
    /// Metric name, referenced by experiments and outcomes.
    pub name: Option<String>,
    /// `binomial` or `continuous`.
    pub kind: Option<String>,
    /// Direction of improvement.
    pub higher_is_better: Option<bool>,
    /// Backend response header to read the value from.
    pub from_response_header: Option<String>,
}

/// `[[layer]]`
#[derive(Debug, Default, Deserialize)]
pub struct RawLayer {
    /// Layer name.
    pub name: Option<String>,
    /// Salt of the layer hash (defaults to the name).
    pub salt: Option<String>,
    /// Experiments of the layer.
    #[serde(default)]
    pub experiment: Vec<RawExperiment>,
}

/// `[[layer.experiment]]`
#[derive(Debug, Default, Deserialize)]
pub struct RawExperiment {
    /// Experiment name, unique across the file.
    pub name: Option<String>,
    /// Share of the layer's buckets.
    pub traffic: Option<f64>,
    /// Start of the experiment's bucket range, as a share of the layer (defaults to the
    /// end of the previous experiment).
    pub offset: Option<f64>,
    /// Salt of the variant hash (defaults to the name).
    pub salt: Option<String>,
    /// Randomization unit: `user`, `session`, `request` or `header:<name>`.
    pub unit: Option<String>,
    /// Primary metric name.
    pub primary_metric: Option<String>,
    /// Secondary metric names.
    #[serde(default)]
    pub metrics: Vec<String>,
    /// Conditions a request must meet to be in the experiment.
    pub targeting: Option<RawTargeting>,
    /// Variants; the first (or the one named `control`) is the control.
    #[serde(default)]
    pub variant: Vec<RawVariant>,
    /// Guardrails watched while the experiment runs.
    pub guardrails: Option<RawGuardrails>,
    /// A ramp that grows `traffic` step by step behind guardrail gates.
    pub ramp: Option<RawRamp>,
    /// Thompson-sampling weights instead of fixed ones.
    pub bandit: Option<RawBandit>,
}

/// `[layer.experiment.ramp]`
#[derive(Debug, Default, Deserialize)]
pub struct RawRamp {
    /// The experiment's traffic at each step; the last is the target.
    pub steps: Option<Vec<f64>>,
    /// Least time at a step: one duration, or one per step.
    pub hold: Option<StringOrList>,
    /// Requests per variant since the step began before it may pass.
    pub min_requests: Option<i64>,
    /// After this long at a step with too little data: `on_insufficient`.
    pub max_wait: Option<String>,
    /// `hold`, `rollback` or `advance`.
    pub on_insufficient: Option<String>,
}

/// `[layer.experiment.bandit]`
#[derive(Debug, Default, Deserialize)]
pub struct RawBandit {
    /// The declared metric whose outcomes are the reward.
    pub reward: Option<String>,
    /// Equal weights at least this long.
    pub explore: Option<String>,
    /// Equal weights until every arm has this many exposures.
    pub min_units: Option<i64>,
    /// Time between weight updates.
    pub update_interval: Option<String>,
    /// Floor per arm.
    pub min_weight: Option<f64>,
    /// Largest share of units moved at one update.
    pub max_shift: Option<f64>,
}

/// `targeting = { … }`
#[derive(Debug, Default, Deserialize)]
pub struct RawTargeting {
    /// Request path must start with one of these (a string or a list).
    pub path_prefix: Option<StringOrList>,
    /// Request method must be one of these.
    pub method: Option<StringOrList>,
    /// Header name → allowed values.
    #[serde(default)]
    pub header: BTreeMap<String, StringOrList>,
    /// Cookie name → allowed values.
    #[serde(default)]
    pub cookie: BTreeMap<String, StringOrList>,
    /// Query parameter → allowed values.
    #[serde(default)]
    pub query: BTreeMap<String, StringOrList>,
}

/// A string or a list of strings.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum StringOrList {
    /// One value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl StringOrList {
    /// The values as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StringOrList::One(s) => vec![s],
            StringOrList::Many(v) => v,
        }
    }
}

/// `[[layer.experiment.variant]]`
#[derive(Debug, Default, Deserialize)]
pub struct RawVariant {
    /// Variant name.
    pub name: Option<String>,
    /// Relative weight.
    pub weight: Option<f64>,
    /// Upstream pool serving this variant (none: routing is left to other layers).
    pub upstream: Option<String>,
    /// Request headers added for this variant.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `[layer.experiment.variant.shadow]`: copies of this variant's requests to a
    /// candidate upstream, compared with the served responses.
    pub shadow: Option<RawShadow>,
}

/// `[layer.experiment.variant.shadow]`
#[derive(Debug, Default, Deserialize)]
pub struct RawShadow {
    /// The upstream that receives the copies.
    pub upstream: Option<String>,
    /// Share of the variant's served requests copied, by request id.
    pub share: Option<f64>,
    /// Methods copied.
    pub methods: Option<Vec<String>>,
    /// Larger request bodies are not copied (`"1MiB"`, or bytes).
    pub max_body_bytes: Option<toml::Value>,
    /// Response bytes kept per side for the comparison (`"1MiB"`, or bytes).
    pub max_response_bytes: Option<toml::Value>,
    /// Copies in flight at most; beyond it a copy is skipped.
    pub max_in_flight: Option<i64>,
    /// Deadline of one copy, from dispatch to the last byte of its response.
    pub timeout: Option<String>,
    /// How responses are compared.
    pub compare: Option<RawShadowCompare>,
}

/// `compare = { … }` of a shadow.
#[derive(Debug, Default, Deserialize)]
pub struct RawShadowCompare {
    /// JSON pointers left out of the comparison.
    #[serde(default)]
    pub json_ignore: Vec<String>,
    /// Numbers this close (absolute) are equal.
    pub float_tolerance: Option<f64>,
}

/// `[layer.experiment.guardrails]`
#[derive(Debug, Default, Deserialize)]
pub struct RawGuardrails {
    /// Requests per variant before any decision.
    pub min_requests: Option<i64>,
    /// How often the evaluator checks.
    pub check_interval: Option<String>,
    /// Length of the sliding window.
    pub window: Option<String>,
    /// Level of the always-valid test.
    pub alpha: Option<f64>,
    /// Error-rate guardrail.
    pub error_rate: Option<RawErrorRate>,
    /// Latency guardrail.
    pub latency_p99: Option<RawLatency>,
    /// `rollback` or `alert`.
    pub action: Option<String>,
    /// Consecutive failing checks before the latency guardrail acts.
    pub consecutive: Option<i64>,
}

/// `error_rate = { … }`
#[derive(Debug, Default, Deserialize)]
pub struct RawErrorRate {
    /// Largest tolerated absolute increase over control.
    pub max_increase: Option<f64>,
}

/// `latency_p99 = { … }`
#[derive(Debug, Default, Deserialize)]
pub struct RawLatency {
    /// Largest tolerated ratio treatment/control.
    pub max_ratio: Option<f64>,
    /// Smallest increase (ms) that counts.
    pub min_increase_ms: Option<f64>,
    /// `total` (the whole response) or `ttfb` (time to first byte).
    pub of: Option<String>,
}
