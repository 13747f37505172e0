//! Every Prometheus metric abgate exports, defined in one place.
//!
//! Label values come only from the config (experiment, variant, upstream, metric names)
//! or from fixed word lists (status class, error kind, drop reason); never from request
//! data. The request path does not look labels up: [`VariantMetrics`] handles are
//! resolved when a config is compiled, so a request costs a few atomic increments.

mod ramp;
mod shadow;

use crate::events::{ErrorKind, WriterStats};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
pub use ramp::RampMetrics;
pub use shadow::{ShadowFamilies, ShadowMetrics};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Buckets for model serving latencies: 1 ms … 60 s.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Status classes used as label values.
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// Index into [`STATUS_CLASSES`] of a status (0 = no response sent).
#[inline]
pub fn status_class(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        500..=599 => 4,
        _ => 5,
    }
}

/// The registry and its metric families.
pub struct Metrics {
    registry: Registry,
    /// `abgate_requests_total{experiment,variant,status_class}`
    pub requests: IntCounterVec,
    /// `abgate_request_duration_seconds{experiment,variant}`
    pub duration: HistogramVec,
    /// `abgate_request_ttfb_seconds{experiment,variant}`
    pub ttfb: HistogramVec,
    /// `abgate_upstream_errors_total{upstream,kind}`
    pub upstream_errors: IntCounterVec,
    /// `abgate_upstream_retries_total{upstream}`
    pub upstream_retries: IntCounterVec,
    /// `abgate_downstream_rejected_total{reason}`
    pub downstream_rejected: IntCounterVec,
    /// `abgate_downstream_connections`: client connections open now (also the count
    /// `server.max_connections` is checked against).
    pub downstream_connections: IntGauge,
    /// `abgate_refused_total{reason}`
    pub refused: IntCounterVec,
    /// `abgate_exposures_total{experiment,variant}`
    pub exposures: IntCounterVec,
    /// `abgate_outcomes_total{metric}`
    pub outcomes: IntCounterVec,
    /// `abgate_events_dropped_total{reason}` (mirrors the writer's counters at scrape)
    pub events_dropped: IntCounterVec,
    /// `abgate_events_written_total`
    pub events_written: IntCounter,
    /// `abgate_guardrail_violation{experiment,variant,guardrail}`
    pub guardrail_violation: IntGaugeVec,
    /// `abgate_rollbacks_total{experiment,variant,guardrail}`
    pub rollbacks: IntCounterVec,
    /// `abgate_config_reloads_total{result}`
    pub config_reloads: IntCounterVec,
    /// `abgate_identity_invalid_total{source}`
    pub identity_invalid: IntCounterVec,
    /// `abgate_identity_minted_total`
    pub identity_minted: IntCounter,
    /// `abgate_proxied_requests_total{status_class}`: every request once, whatever its experiments.
    pub proxied: IntCounterVec,
    /// Pre-resolved `proxied` handles by status class index.
    pub proxied_by_class: [IntCounter; 6],
    /// `abgate_build_info{version,config_version}`
    pub build_info: IntGaugeVec,
    /// `abgate_uptime_seconds`
    pub uptime: IntGauge,
    /// `abgate_srm_p_value{experiment}`: chi-square p of exposures per variant vs weights.
    pub srm_p_value: prometheus::GaugeVec,
    /// `abgate_bandit_weight{experiment,variant}`: the share of a bandit experiment's
    /// buckets each arm serves in the current period.
    pub bandit_weight: prometheus::GaugeVec,
    /// `abgate_bandit_prob_best{experiment,variant}`: each arm's probability of being
    /// best at the last update.
    pub bandit_prob_best: prometheus::GaugeVec,
    /// `abgate_upstream_healthy{upstream,addr}`: set at scrape from the pools
    /// ([`Metrics::set_upstream_health`]).
    pub upstream_healthy: IntGaugeVec,
    /// `abgate_fleet_enabled`: 1 with `[fleet]`, else 0 (set at scrape).
    pub fleet_enabled: IntGauge,
    /// `abgate_fleet_connected`: 1 while the broker connection is up (set at scrape).
    pub fleet_connected: IntGauge,
    /// `abgate_fleet_instances`: instances with a fresh heartbeat (set at scrape).
    pub fleet_instances: IntGauge,
    /// `abgate_fleet_state_age_seconds` (set at scrape).
    pub fleet_state_age: prometheus::Gauge,
    /// `abgate_fleet_decisions_applied_total{action}`: decisions other sidecars took,
    /// applied here.
    pub fleet_decisions_applied: IntCounterVec,
    /// `abgate_events_shipped_total`: events the stream acknowledged (set at scrape).
    pub events_shipped: IntCounter,
    /// `abgate_events_ship_backlog_bytes`: local log not yet acknowledged (set at scrape).
    pub ship_backlog_bytes: IntGauge,
    /// `abgate_events_ship_dropped_total`: events skipped by `fleet.max_backlog`.
    pub ship_dropped: IntCounter,
    /// `abgate_ramp_*`: the ramps' step, traffic and status.
    pub ramps: RampMetrics,
    /// `abgate_shadow_*`: shadow copies ([`ShadowFamilies`]).
    pub shadow: ShadowFamilies,
    started: std::time::Instant,
}

/// The fleet's figures at scrape time (from `runtime::FleetStatus`, which this module
/// cannot see).
#[derive(Debug, Clone, Copy, Default)]
pub struct FleetFigures {
    /// `[fleet]` is configured.
    pub enabled: bool,
    /// The broker connection is up.
    pub connected: bool,
    /// Instances with a fresh heartbeat.
    pub instances_fresh: usize,
    /// Seconds since the fleet's decisions were last read or updated.
    pub state_age_seconds: f64,
    /// Events acknowledged by the stream.
    pub shipped: u64,
    /// Events skipped by `max_backlog`.
    pub dropped: u64,
    /// Unshipped bytes of the local log.
    pub backlog_bytes: u64,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Registration only fails on duplicate or malformed names: fixed strings here.
    r.expect("metric definitions are static and valid")
}

impl Metrics {
    /// Create and register every metric.
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = must(IntCounterVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let requests = counter_vec(
            "abgate_requests_total",
            "Proxied requests by experiment, variant (served) and status class; experiment=\"none\" for requests in no experiment. A request in several layers counts once per experiment.",
            &["experiment", "variant", "status_class"],
        );
        let duration = must(HistogramVec::new(
            HistogramOpts::new(
                "abgate_request_duration_seconds",
                "Time from request arrival to response end, by experiment and variant (served).",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["experiment", "variant"],
        ));
        must(registry.register(Box::new(duration.clone())));
        let ttfb = must(HistogramVec::new(
            HistogramOpts::new(
                "abgate_request_ttfb_seconds",
                "Time from request arrival to the first byte of the response body sent to the client (time to first token of a stream), by experiment and variant (served).",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["experiment", "variant"],
        ));
        must(registry.register(Box::new(ttfb.clone())));
        let upstream_errors = counter_vec(
            "abgate_upstream_errors_total",
            "Backend failures by upstream and kind (connect, timeout, reset, 5xx, grpc), counted once per request by its final outcome.",
            &["upstream", "kind"],
        );
        let upstream_retries = counter_vec(
            "abgate_upstream_retries_total",
            "Requests sent again to a backend after a failed attempt (a request that then succeeds is not an error).",
            &["upstream"],
        );
        let refused = counter_vec(
            "abgate_refused_total",
            "Requests refused for a missing or wrong token or a bad QA force: force_token (403 on the proxy listener), force_invalid (400), admin_token (401 on the admin API).",
            &["reason"],
        );
        for r in ["force_token", "force_invalid", "admin_token"] {
            refused.with_label_values(&[r]);
        }
        let downstream_rejected = counter_vec(
            "abgate_downstream_rejected_total",
            "Requests refused before routing, by reason (bad_framing: conflicting Content-Length/Transfer-Encoding; bad_request: a body abgate could not read; header_too_large: a request head over server.max_header_bytes, answered 431; max_connections: a new connection closed unread because server.max_connections were open; silent: a new plaintext connection that sent fewer than 24 bytes within server.keepalive_timeout).",
            &["reason"],
        );
        let exposures = counter_vec(
            "abgate_exposures_total",
            "Exposures by experiment and variant (assigned).",
            &["experiment", "variant"],
        );
        let outcomes = counter_vec(
            "abgate_outcomes_total",
            "Outcomes accepted, by metric.",
            &["metric"],
        );
        let events_dropped = counter_vec(
            "abgate_events_dropped_total",
            "Events not written, by reason (queue_full, write_error, closed).",
            &["reason"],
        );
        let events_written = must(IntCounter::new(
            "abgate_events_written_total",
            "Events written to the event log.",
        ));
        must(registry.register(Box::new(events_written.clone())));
        let guardrail_violation = must(IntGaugeVec::new(
            Opts::new(
                "abgate_guardrail_violation",
                "1 while a guardrail is violated for a variant, else 0.",
            ),
            &["experiment", "variant", "guardrail"],
        ));
        must(registry.register(Box::new(guardrail_violation.clone())));
        let rollbacks = counter_vec(
            "abgate_rollbacks_total",
            "Automatic and manual rollbacks by experiment, variant and guardrail.",
            &["experiment", "variant", "guardrail"],
        );
        let config_reloads = counter_vec(
            "abgate_config_reloads_total",
            "Config reload attempts by result (ok, error, unchanged).",
            &["result"],
        );
        let identity_invalid = counter_vec(
            "abgate_identity_invalid_total",
            "Malformed identity values treated as absent, by source (header, cookie, session, unit_header).",
            &["source"],
        );
        let identity_minted = must(IntCounter::new(
            "abgate_identity_minted_total",
            "Identities minted (new units given a cookie).",
        ));
        must(registry.register(Box::new(identity_minted.clone())));
        let proxied = counter_vec(
            "abgate_proxied_requests_total",
            "Every proxied request once, by status class.",
            &["status_class"],
        );
        let build_info = must(IntGaugeVec::new(
            Opts::new(
                "abgate_build_info",
                "Always 1; labels carry the build and config version.",
            ),
            &["version", "config_version"],
        ));
        must(registry.register(Box::new(build_info.clone())));
        let uptime = must(IntGauge::new(
            "abgate_uptime_seconds",
            "Seconds since start.",
        ));
        must(registry.register(Box::new(uptime.clone())));
        let srm_p_value = must(prometheus::GaugeVec::new(
            Opts::new(
                "abgate_srm_p_value",
                "Sample ratio check: chi-square p-value of exposures per variant against the weights (below 0.001 = mismatch).",
            ),
            &["experiment"],
        ));
        must(registry.register(Box::new(srm_p_value.clone())));
        let bandit_weight = must(prometheus::GaugeVec::new(
            Opts::new(
                "abgate_bandit_weight",
                "Bandit experiments: the share of the experiment's units each variant serves in the current period.",
            ),
            &["experiment", "variant"],
        ));
        must(registry.register(Box::new(bandit_weight.clone())));
        let bandit_prob_best = must(prometheus::GaugeVec::new(
            Opts::new(
                "abgate_bandit_prob_best",
                "Bandit experiments: each variant's posterior probability of having the best reward, at the last update.",
            ),
            &["experiment", "variant"],
        ));
        must(registry.register(Box::new(bandit_prob_best.clone())));
        let upstream_healthy = must(IntGaugeVec::new(
            Opts::new(
                "abgate_upstream_healthy",
                "1 while an upstream address passes its health check, else 0; by upstream and resolved address (current config).",
            ),
            &["upstream", "addr"],
        ));
        must(registry.register(Box::new(upstream_healthy.clone())));
        let gauge = |name: &str, help: &str| {
            let g = must(IntGauge::new(name, help));
            must(registry.register(Box::new(g.clone())));
            g
        };
        let counter = |name: &str, help: &str| {
            let c = must(IntCounter::new(name, help));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let downstream_connections = gauge(
            "abgate_downstream_connections",
            "Client connections open now (refused beyond server.max_connections).",
        );
        let events_shipped = counter(
            "abgate_events_shipped_total",
            "Events of the local log published to the fleet's stream and acknowledged by it (a re-published event counts again).",
        );
        let ship_backlog_bytes = gauge(
            "abgate_events_ship_backlog_bytes",
            "Bytes of the local event log not yet acknowledged by the fleet's stream.",
        );
        let ship_dropped = counter(
            "abgate_events_ship_dropped_total",
            "Events never shipped to the fleet's stream: skipped because the unshipped log exceeded fleet.max_backlog (they stay in the local files).",
        );
        let fleet_enabled = gauge(
            "abgate_fleet_enabled",
            "1 when this sidecar is part of a fleet ([fleet]), else 0.",
        );
        let fleet_connected = gauge(
            "abgate_fleet_connected",
            "1 while the connection to the fleet's broker is up, else 0.",
        );
        let fleet_instances = gauge(
            "abgate_fleet_instances",
            "Sidecars of the fleet with a heartbeat in the last 10 s, this one included.",
        );
        let fleet_state_age = must(prometheus::Gauge::new(
            "abgate_fleet_state_age_seconds",
            "Seconds since the fleet's decisions were last read in full or updated by the watch (0 without [fleet]).",
        ));
        must(registry.register(Box::new(fleet_state_age.clone())));
        let fleet_decisions_applied = counter_vec(
            "abgate_fleet_decisions_applied_total",
            "Decisions taken by another sidecar of the fleet and applied here, by action.",
            &["action"],
        );
        for a in ["rollback", "manual_rollback", "pause", "resume"] {
            fleet_decisions_applied.with_label_values(&[a]);
        }
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            let _ = registry.register(Box::new(pc));
        }
        for r in ["queue_full", "write_error", "closed"] {
            events_dropped.with_label_values(&[r]);
        }
        for src in ["header", "cookie", "session"] {
            identity_invalid.with_label_values(&[src]);
        }
        for r in ["ok", "error"] {
            config_reloads.with_label_values(&[r]);
        }
        for r in [
            "bad_request",
            "bad_framing",
            "header_too_large",
            "max_connections",
        ] {
            downstream_rejected.with_label_values(&[r]);
        }
        let ramps = must(RampMetrics::register(&registry));
        let proxied_by_class =
            std::array::from_fn(|i| proxied.with_label_values(&[STATUS_CLASSES[i]]));
        let shadow = ShadowFamilies::register(&registry);
        Arc::new(Metrics {
            shadow,
            proxied_by_class,
            registry,
            requests,
            duration,
            ttfb,
            upstream_errors,
            upstream_retries,
            downstream_rejected,
            downstream_connections,
            refused,
            exposures,
            outcomes,
            events_dropped,
            events_written,
            guardrail_violation,
            rollbacks,
            config_reloads,
            identity_invalid,
            identity_minted,
            proxied,
            build_info,
            uptime,
            srm_p_value,
            bandit_weight,
            bandit_prob_best,
            upstream_healthy,
            fleet_enabled,
            fleet_connected,
            fleet_instances,
            fleet_state_age,
            fleet_decisions_applied,
            events_shipped,
            ship_backlog_bytes,
            ship_dropped,
            ramps,
            started: std::time::Instant::now(),
        })
    }

    /// Handles for one (experiment, variant) pair.
    pub fn variant(&self, experiment: &str, variant: &str) -> VariantMetrics {
        VariantMetrics {
            requests: std::array::from_fn(|i| {
                self.requests
                    .with_label_values(&[experiment, variant, STATUS_CLASSES[i]])
            }),
            duration: self.duration.with_label_values(&[experiment, variant]),
            ttfb: self.ttfb.with_label_values(&[experiment, variant]),
            exposures: self.exposures.with_label_values(&[experiment, variant]),
        }
    }

    /// Pre-resolved `abgate_upstream_errors_total` handles of one upstream.
    pub fn upstream_errors(&self, upstream: &str) -> UpstreamErrors {
        UpstreamErrors {
            kinds: ErrorKind::UPSTREAM.map(|k| {
                self.upstream_errors
                    .with_label_values(&[upstream, k.upstream_label().unwrap_or("proxy")])
            }),
            retries: self.upstream_retries.with_label_values(&[upstream]),
        }
    }

    /// Record the config version now serving.
    pub fn set_config_version(&self, version: &str) {
        self.build_info.reset();
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), version])
            .set(1);
    }

    /// Replace every `abgate_upstream_healthy` series with `(upstream, address, healthy)`
    /// of the current config, so addresses no longer in use (re-resolved away, or of a
    /// previous config) disappear. Called at scrape time.
    pub fn set_upstream_health<'a>(
        &self,
        rows: impl IntoIterator<Item = (&'a str, std::net::SocketAddr, bool)>,
    ) {
        self.upstream_healthy.reset();
        for (upstream, addr, healthy) in rows {
            self.upstream_healthy
                .with_label_values(&[upstream, &addr.to_string()])
                .set(healthy as i64);
        }
    }

    /// Set the fleet's metrics from its status (before a scrape renders).
    pub fn set_fleet(&self, f: FleetFigures) {
        self.fleet_enabled.set(f.enabled as i64);
        self.fleet_connected.set(f.connected as i64);
        self.fleet_instances.set(f.instances_fresh as i64);
        self.fleet_state_age.set(f.state_age_seconds);
        self.ship_backlog_bytes.set(f.backlog_bytes as i64);
        for (c, v) in [
            (&self.events_shipped, f.shipped),
            (&self.ship_dropped, f.dropped),
        ] {
            let cur = c.get();
            if v > cur {
                c.inc_by(v - cur);
            }
        }
    }

    /// Render the text exposition (format 0.0.4), refreshing scrape-time values first.
    pub fn render(&self, writer: &WriterStats) -> (String, Vec<u8>) {
        self.uptime.set(self.started.elapsed().as_secs() as i64);
        let set = |c: IntCounter, v: u64| {
            let cur = c.get();
            if v > cur {
                c.inc_by(v - cur);
            }
        };
        set(
            self.events_dropped.with_label_values(&["queue_full"]),
            writer.dropped_queue_full.load(Relaxed),
        );
        set(
            self.events_dropped.with_label_values(&["write_error"]),
            writer.dropped_write_error.load(Relaxed),
        );
        set(
            self.events_dropped.with_label_values(&["closed"]),
            writer.dropped_closed.load(Relaxed),
        );
        set(self.events_written.clone(), writer.written.load(Relaxed));
        let enc = TextEncoder::new();
        let mut buf = Vec::new();
        let _ = enc.encode(&self.registry.gather(), &mut buf);
        (enc.format_type().to_string(), buf)
    }
}

/// Pre-resolved `abgate_upstream_errors_total{upstream,kind}` handles of one upstream,
/// one per [`ErrorKind::UPSTREAM`] kind, and its `abgate_upstream_retries_total{upstream}`.
#[derive(Clone)]
pub struct UpstreamErrors {
    kinds: [IntCounter; ErrorKind::UPSTREAM.len()],
    /// Retries of requests to this upstream.
    pub retries: IntCounter,
}

impl UpstreamErrors {
    /// Count a failure of `kind`; abgate's own failures (`proxy`) are not the upstream's.
    ///
    /// Hot path: called once per failed request.
    #[inline]
    pub fn count(&self, kind: ErrorKind) {
        if let Some(i) = ErrorKind::UPSTREAM.iter().position(|&k| k == kind) {
            self.kinds[i].inc();
        }
    }
}

/// Pre-resolved metric handles of one variant.
#[derive(Clone)]
pub struct VariantMetrics {
    /// By status class index.
    pub requests: [IntCounter; 6],
    /// Duration histogram.
    pub duration: Histogram,
    /// Time-to-first-byte histogram.
    pub ttfb: Histogram,
    /// Exposures.
    pub exposures: IntCounter,
}
