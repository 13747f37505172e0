//! The compiled configuration: what the proxy, the guardrail evaluator and the analysis
//! read. Every value here was validated and resolved (defaults filled in, names turned
//! into indices, durations parsed) by `super::compile`; nothing changes after that, so
//! the request path reads it through `arc-swap` without locks or checks.

mod cookie;
mod exposure;
mod layers;

pub use cookie::CookieName;
pub use exposure::AssignmentNames;
pub use layers::*;

use http::HeaderName;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A validated, immutable configuration.
#[derive(Debug)]
pub struct Config {
    /// Short hash of the file text; every exposure records it.
    pub version: String,
    /// The file this config was read from.
    pub source: PathBuf,
    /// `[server]`
    pub server: ServerSettings,
    /// `[admin]`
    pub admin: AdminSettings,
    /// `[identity]`
    pub identity: IdentitySettings,
    /// `[events]`
    pub events: EventSettings,
    /// `[state]`
    pub state_dir: PathBuf,
    /// Upstream pools, in name order; variants refer to them by index.
    pub upstreams: Vec<UpstreamSpec>,
    /// Index into `upstreams` of `routing.default_upstream`.
    pub default_upstream: usize,
    /// Global holdout.
    pub holdout: Option<Holdout>,
    /// Declared metrics.
    pub metrics: Vec<MetricDef>,
    /// Layers, in file order.
    pub layers: Vec<Layer>,
    /// Some layer randomizes by session (the proxy reads or mints the session cookie).
    pub uses_session: bool,
    /// Some layer randomizes by request (the proxy draws a fresh id per request).
    pub uses_request_unit: bool,
}

impl Config {
    /// Find an experiment by name: (layer index, experiment index).
    pub fn experiment(&self, name: &str) -> Option<(usize, usize)> {
        self.layers.iter().enumerate().find_map(|(li, l)| {
            l.experiments
                .iter()
                .position(|e| &*e.name == name)
                .map(|ei| (li, ei))
        })
    }

    /// All experiments with their layer.
    pub fn experiments(&self) -> impl Iterator<Item = (&Layer, &Experiment)> {
        self.layers
            .iter()
            .flat_map(|l| l.experiments.iter().map(move |e| (l, e)))
    }

    /// A metric by name.
    pub fn metric(&self, name: &str) -> Option<&MetricDef> {
        self.metrics.iter().find(|m| &*m.name == name)
    }

    /// The admin token from the configured environment variable (empty = none set).
    pub fn admin_token(&self) -> Option<String> {
        std::env::var(&self.admin.token_env)
            .ok()
            .filter(|t| !t.is_empty())
    }
}

/// `[server]`, resolved.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Listen addresses.
    pub listen: Vec<String>,
    /// Proxy worker threads.
    pub threads: usize,
    /// Bound on waiting for in-flight requests at shutdown.
    pub shutdown_timeout: Duration,
    /// Whether to add `x-abgate-variant` to responses.
    pub debug_header: bool,
    /// Path of the outcome endpoint.
    pub outcome_path: String,
    /// Send backend request header names in the client's case (through pingora's
    /// case-preserving map) rather than lowercase.
    pub preserve_header_case: bool,
}

/// `[admin]`, resolved.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Listen address.
    pub listen: String,
    /// Environment variable of the admin token.
    pub token_env: String,
    /// Update per-request metrics (requests, durations, exposures, upstream errors).
    pub request_metrics: bool,
}

/// `[identity]`, resolved.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// Trusted header (lower-case), if any.
    pub header: Option<HeaderName>,
    /// Identity cookie name.
    pub cookie: CookieName,
    /// Session cookie name.
    pub session_cookie: CookieName,
    /// Mint ids when absent.
    pub mint: bool,
    /// Max-Age of the identity cookie.
    pub max_age: Duration,
    /// `Secure` attribute on minted cookies.
    pub secure: bool,
}

/// `[events]`, resolved.
#[derive(Debug, Clone)]
pub struct EventSettings {
    /// Directory of event files.
    pub dir: PathBuf,
    /// Rotation size.
    pub rotate_bytes: u64,
    /// Flush interval.
    pub flush_interval: Duration,
    /// Queue capacity.
    pub queue: usize,
    /// Hash unit ids before writing.
    pub hash_unit_ids: bool,
    /// Log exposures and outcomes (off: nothing is written, the outcome endpoint answers 503).
    pub enabled: bool,
    /// Environment variable with the hash key.
    pub hash_key_env: String,
}

/// One upstream pool.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSpec {
    /// Pool name (`[upstream.NAME]`).
    pub name: Arc<str>,
    /// Addresses, round-robin.
    pub addrs: Vec<SocketAddr>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Read timeout.
    pub read_timeout: Duration,
    /// Health-check period.
    pub health_check_interval: Duration,
}

/// The global holdout.
#[derive(Debug, Clone)]
pub struct Holdout {
    /// Units whose holdout bucket is below this are held out.
    pub threshold: u32,
    /// Hash seed from the salt.
    pub seed: u64,
}

/// Metric kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// 0/1 per unit.
    Binomial,
    /// Sum per unit.
    Continuous,
}

impl MetricKind {
    /// The config/JSON word.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Binomial => "binomial",
            MetricKind::Continuous => "continuous",
        }
    }
}

/// A declared metric.
#[derive(Debug, Clone)]
pub struct MetricDef {
    /// Name.
    pub name: Arc<str>,
    /// Kind.
    pub kind: MetricKind,
    /// Direction of improvement.
    pub higher_is_better: bool,
    /// Backend response header carrying a value of this metric.
    pub from_response_header: Option<HeaderName>,
}
