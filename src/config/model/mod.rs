//! The compiled configuration: what the proxy, the guardrail evaluator and the analysis
//! read. Every value here was validated and resolved (defaults filled in, names turned
//! into indices, durations parsed) by `super::compile`; nothing changes after that, so
//! the request path reads it through `arc-swap` without locks or checks.

mod bandit;
mod cookie;
mod exposure;
mod layers;
mod ramp;
mod shadow;

pub use bandit::Bandit;
pub use cookie::CookieName;
pub use exposure::AssignmentNames;
pub use layers::*;
pub use ramp::{OnInsufficient, Ramp};
pub use shadow::{Shadow, ShadowCompare};

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
    /// `[fleet]`, when this sidecar is part of a fleet.
    pub fleet: Option<FleetSettings>,
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
    /// Add `X-Forwarded-For` / `X-Forwarded-Proto` to backend requests.
    pub forwarded: bool,
    /// Largest request head (request line and header lines) answered, in bytes; a
    /// larger one gets 431 and is not forwarded.
    pub max_header_bytes: usize,
    /// Client connections open at most; `None`: derived at start from the descriptor
    /// limit (see `proxy::connections`).
    pub max_connections: Option<usize>,
    /// How long an idle HTTP/1.1 client connection is kept for its next request, in
    /// whole seconds (at least 1); then it is closed.
    pub keepalive_timeout: u64,
    /// TLS listeners, if any.
    pub tls: Option<ServerTls>,
}

/// `[server.tls]`, resolved: the files were read and parsed once by `check`.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// TLS listen addresses.
    pub listen: Vec<String>,
    /// Certificate chain file (absolute or relative to the working directory).
    pub cert: PathBuf,
    /// Private key file.
    pub key: PathBuf,
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

/// `[fleet]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetSettings {
    /// NATS server URLs (`nats://` or `tls://`), tried in order.
    pub nats_urls: Vec<String>,
    /// This sidecar's name in the fleet (events' `instance`, KV keys).
    pub instance: String,
    /// JetStream stream of the events (subjects `abgate.events.<type>`).
    pub stream: String,
    /// JetStream key-value bucket of decisions and windows.
    pub bucket: String,
    /// Ship the local event log to the stream.
    pub ship_events: bool,
    /// Guardrails judge the sum of every fresh sidecar's windows.
    pub share_windows: bool,
    /// Unshipped local log kept at most, in bytes.
    pub max_backlog: u64,
}

/// One upstream pool.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSpec {
    /// Pool name (`[upstream.NAME]`).
    pub name: Arc<str>,
    /// Addresses as written (`host:port`), re-resolved every `resolve_interval`.
    pub hosts: Vec<String>,
    /// Every address they resolved to at load, round-robin.
    pub addrs: Vec<SocketAddr>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Longest wait for the response header.
    pub read_timeout: Duration,
    /// Longest silence inside a streamed body or on an upgraded connection (default:
    /// `read_timeout`).
    pub idle_timeout: Duration,
    /// TCP health-check period (without an HTTP `health_check`).
    pub health_check_interval: Duration,
    /// The HTTP health check, if configured.
    pub health_check: Option<HttpHealthCheck>,
    /// Wire protocol to the backend.
    pub protocol: Protocol,
    /// TLS to the backend.
    pub tls: bool,
    /// TLS server name; `None`: the host of each address.
    pub sni: Option<String>,
    /// Trusted roots for this upstream (DER), replacing the system's.
    pub ca: Option<Arc<Vec<Vec<u8>>>>,
    /// Verify the backend's certificate.
    pub verify: bool,
    /// `Host` / `:authority` to send; `None`: the client's.
    pub host: Option<http::HeaderValue>,
    /// `grpc-status` values (0–63) that are errors of the variant, as bits.
    pub grpc_error_codes: u64,
    /// Period of re-resolving host names.
    pub resolve_interval: Duration,
}

impl UpstreamSpec {
    /// The read timeout pingora applies to every read from the backend: the longer of
    /// `read_timeout` and `idle_timeout`; the shorter one is enforced by abgate's
    /// watchdog on HTTP/1.x backends.
    pub fn per_read_timeout(&self) -> Duration {
        self.read_timeout.max(self.idle_timeout)
    }

    /// Whether gRPC status `code` is an error of the variant.
    #[inline]
    pub fn grpc_error(&self, code: u32) -> bool {
        code < 64 && self.grpc_error_codes & (1 << code) != 0
    }
}

/// The wire protocol to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 (over TLS with `tls = true`).
    Http1,
    /// HTTP/2 with prior knowledge, without TLS (gRPC backends).
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`).
    H2,
}

/// `health_check = { path, interval, expect, failures }`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpHealthCheck {
    /// Path requested (GET).
    pub path: String,
    /// Period.
    pub interval: Duration,
    /// Statuses that mean healthy.
    pub expect: Vec<u16>,
    /// Consecutive failures that take an address out (and successes that bring it back).
    pub failures: usize,
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
