//! The proxy: the pingora service ([`service`]) and the process around it ([`serve`]).
//!
//! This module is glue. [`App`] holds what lives for the whole process (metrics, event
//! sink, guard state) and an `ArcSwap<Snapshot>`: everything derived from one config
//! generation (compiled config, upstream pools, pre-resolved metric handles). A request
//! loads the snapshot once and finishes on it, so a reload never changes a request midway.

pub mod serve;
pub mod service;
pub mod upstream;

use crate::admin::metrics::{Metrics, VariantMetrics};
use crate::config::{self, Config, ConfigError};
use crate::events::EventSink;
use crate::guard::{ExperimentState, Guard};
use arc_swap::ArcSwap;
use prometheus::IntCounter;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;
use upstream::Pool;

/// Runtime handles of one experiment in a snapshot.
pub struct ExperimentRuntime {
    /// Live state (rollbacks, windows), shared across reloads.
    pub state: Arc<ExperimentState>,
    /// Metric handles per variant.
    pub metrics: Vec<VariantMetrics>,
}

/// Everything derived from one config generation.
pub struct Snapshot {
    /// The compiled config.
    pub config: Arc<Config>,
    /// Pools by upstream index.
    pub pools: Vec<Pool>,
    /// `[layer][experiment]`.
    pub experiments: Vec<Vec<ExperimentRuntime>>,
    /// Handles for requests in no experiment.
    pub none_metrics: VariantMetrics,
    /// `abgate_upstream_errors_total` by pool and kind (connect, timeout, reset, 5xx).
    pub upstream_errors: Vec<[IntCounter; 4]>,
    /// `abgate_outcomes_total` by metric index.
    pub outcome_counters: Vec<IntCounter>,
    /// Config version as an `Arc` for events.
    pub version: Arc<str>,
    /// Admin token read when this generation was built.
    pub token: Option<String>,
    stop_health: watch::Sender<bool>,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let _ = self.stop_health.send(true);
    }
}

/// Result of a reload attempt.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// A new config now serves.
    Applied {
        /// Its version.
        version: String,
    },
    /// The file did not change.
    Unchanged,
}

/// Process-wide state shared by the request path, admin API and background tasks.
pub struct App {
    /// The current config generation.
    pub snapshot: ArcSwap<Snapshot>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Event queue.
    pub sink: EventSink,
    /// Guard state store.
    pub guard: Arc<Guard>,
    /// The config file being served.
    pub config_path: PathBuf,
    /// Requests in flight.
    pub inflight: AtomicI64,
    /// Listeners bound and config loaded.
    pub ready: AtomicBool,
    /// Origin of the millisecond clock used by windows.
    pub epoch: Instant,
    reload_lock: Mutex<()>,
}

impl App {
    /// Build the app around a validated config. Must run inside a tokio runtime.
    pub fn new(
        config: Config,
        path: PathBuf,
        sink: EventSink,
        guard: Arc<Guard>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Arc<App>> {
        let snap = build_snapshot(Arc::new(config), &guard, &metrics)?;
        Ok(Arc::new(App {
            snapshot: ArcSwap::from_pointee(snap),
            metrics,
            sink,
            guard,
            config_path: path,
            inflight: AtomicI64::new(0),
            ready: AtomicBool::new(false),
            epoch: Instant::now(),
            reload_lock: Mutex::new(()),
        }))
    }

    /// Milliseconds since start (the windows' clock).
    #[inline]
    pub fn now_ms(&self) -> u64 {
        self.ms_at(Instant::now())
    }

    /// `now_ms` at an instant already read.
    #[inline]
    pub fn ms_at(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Re-read the config file; apply it only if it validates. On failure the old
    /// config keeps serving; the error is logged and counted either way.
    pub fn reload(&self, trigger: &str) -> Result<ReloadOutcome, ConfigError> {
        let _g = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let result = config::load_file(&self.config_path);
        let cfg = match result {
            Ok(c) => c,
            Err(e) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["error"])
                    .inc();
                tracing::error!(
                    "config reload ({trigger}) rejected; the previous config keeps serving:\n{e}"
                );
                return Err(e);
            }
        };
        let cur = self.snapshot.load();
        if cfg.version == cur.config.version {
            return Ok(ReloadOutcome::Unchanged);
        }
        warn_restart_only(&cur.config, &cfg);
        let snap = match build_snapshot(Arc::new(cfg), &self.guard, &self.metrics) {
            Ok(s) => s,
            Err(e) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["error"])
                    .inc();
                tracing::error!("config reload ({trigger}) failed building upstream pools: {e}");
                return Err(ConfigError {
                    file: self.config_path.clone(),
                    diagnostics: vec![config::Diagnostic {
                        line: None,
                        path: "upstream".into(),
                        message: e.to_string(),
                    }],
                });
            }
        };
        let version = snap.config.version.clone();
        self.guard.retain(&snap.config);
        self.metrics.set_config_version(&version);
        self.snapshot.store(Arc::new(snap));
        self.metrics.config_reloads.with_label_values(&["ok"]).inc();
        tracing::info!("config reloaded ({trigger}): version {version}");
        Ok(ReloadOutcome::Applied { version })
    }
}

fn warn_restart_only(old: &Config, new: &Config) {
    let mut changed = Vec::new();
    if old.server.listen != new.server.listen {
        changed.push("server.listen");
    }
    if old.server.threads != new.server.threads {
        changed.push("server.threads");
    }
    if old.admin.listen != new.admin.listen {
        changed.push("admin.listen");
    }
    if old.events.dir != new.events.dir
        || old.events.queue != new.events.queue
        || old.events.rotate_bytes != new.events.rotate_bytes
        || old.events.flush_interval != new.events.flush_interval
        || old.events.hash_unit_ids != new.events.hash_unit_ids
    {
        changed.push("events.*");
    }
    if old.state_dir != new.state_dir {
        changed.push("state.dir");
    }
    if !changed.is_empty() {
        tracing::warn!(
            "config reload: {} changed; these apply only after a restart (the running values stay)",
            changed.join(", ")
        );
    }
}

/// Build a snapshot: pools (with health checks), experiment states and metric handles.
pub fn build_snapshot(
    config: Arc<Config>,
    guard: &Guard,
    metrics: &Metrics,
) -> std::io::Result<Snapshot> {
    let (stop_health, stop_rx) = watch::channel(false);
    let mut pools = Vec::with_capacity(config.upstreams.len());
    for spec in &config.upstreams {
        let p = Pool::new(spec)?;
        if tokio::runtime::Handle::try_current().is_ok() {
            p.spawn_health_checks(stop_rx.clone());
        }
        pools.push(p);
    }
    let experiments = config
        .layers
        .iter()
        .map(|l| {
            l.experiments
                .iter()
                .map(|e| ExperimentRuntime {
                    state: guard.experiment_state(e),
                    metrics: e
                        .variants
                        .iter()
                        .map(|v| metrics.variant(&e.name, &v.name))
                        .collect(),
                })
                .collect()
        })
        .collect();
    // Export every guardrail series (at 0) from the start, so dashboards and alerts see
    // the metric before anything happens.
    for e in config.layers.iter().flat_map(|l| l.experiments.iter()) {
        metrics.srm_p_value.with_label_values(&[&e.name]).set(1.0);
        if e.guardrails.is_none() {
            continue;
        }
        for (vi, v) in e.variants.iter().enumerate() {
            if vi == e.control {
                continue;
            }
            for g in ["error_rate", "latency_p99", "latency_p50", "breaker"] {
                metrics
                    .guardrail_violation
                    .with_label_values(&[&e.name, &v.name, g]);
                metrics.rollbacks.with_label_values(&[&e.name, &v.name, g]);
            }
        }
    }
    let upstream_errors = config
        .upstreams
        .iter()
        .map(|u| {
            ["connect", "timeout", "reset", "5xx"]
                .map(|k| metrics.upstream_errors.with_label_values(&[&u.name, k]))
        })
        .collect();
    let outcome_counters = config
        .metrics
        .iter()
        .map(|m| metrics.outcomes.with_label_values(&[&m.name]))
        .collect();
    metrics.set_config_version(&config.version);
    Ok(Snapshot {
        version: Arc::from(config.version.as_str()),
        token: config.admin_token(),
        none_metrics: metrics.variant("none", "none"),
        pools,
        experiments,
        upstream_errors,
        outcome_counters,
        config,
        stop_health,
    })
}

impl Snapshot {
    /// Constant-time check of a presented admin token.
    pub fn token_ok(&self, presented: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        match &self.token {
            Some(t) => t.len() == presented.len() && bool::from(t.as_bytes().ct_eq(presented)),
            None => false,
        }
    }
}

/// Count a request in flight for the duration of the guard.
pub struct InflightGuard(pub Arc<App>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Relaxed);
    }
}
