//! The runtime: process-wide shared state ([`App`]) and the current config generation
//! ([`Snapshot`]), swapped atomically on reload.
//!
//! [`App`] holds what lives for the whole process (metrics, event sink, guard state) and
//! an `ArcSwap<Snapshot>`: everything derived from one config generation. The proxy, the
//! admin API and the control loops all read it; none of them depends on another.
//! Decisions about variants go through one function, [`App::decide`].

mod decide;
mod reload;
mod snapshot;
pub mod upstream;

pub use snapshot::{build_snapshot, ExperimentRuntime, Live, Snapshot};

use crate::config::Config;
use crate::events::EventSink;
use crate::guard::{Decision, Guard};
use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

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

/// What the fleet tasks (`crate::fleet`) report about themselves, for the admin API
/// and the metrics: written there, read here and by the admin API, so neither depends
/// on the other. All zero without `[fleet]`.
#[derive(Debug, Default)]
pub struct FleetStatus {
    /// `[fleet]` is configured.
    pub enabled: AtomicBool,
    /// The broker connection is up.
    pub connected: AtomicBool,
    /// Events the shipper published and the stream acknowledged (including those the
    /// stream recognised as duplicates of an earlier publish).
    pub shipped: AtomicU64,
    /// Events skipped unshipped because the backlog exceeded `max_backlog`.
    pub ship_dropped: AtomicU64,
    /// Bytes of the local event log not yet acknowledged by the stream.
    pub backlog_bytes: AtomicU64,
    /// Times the broker connection came up (a change means a reconnect).
    pub connects: AtomicU64,
    /// This sidecar's name in the fleet (set once at start).
    pub instance: OnceLock<String>,
    /// Unix time (ms) of the last successful full read of the decision bucket or watch
    /// update; 0 = never.
    pub state_updated_unix_ms: AtomicU64,
    /// Instances seen in the bucket: name → unix time (ms) of their last heartbeat.
    pub instances: Mutex<BTreeMap<String, u64>>,
}

impl FleetStatus {
    /// A heartbeat older than this no longer counts the instance as present.
    pub const INSTANCE_FRESH_MS: u64 = 10_000;

    /// Seconds since the fleet state was last read in full or updated by the watch, at
    /// unix time `now_ms` (0 without `[fleet]`; since start when never read).
    pub fn state_age_seconds(&self, now_ms: u64, started_ms: u64) -> f64 {
        if !self.enabled.load(Relaxed) {
            return 0.0;
        }
        let at = match self.state_updated_unix_ms.load(Relaxed) {
            0 => started_ms,
            t => t,
        };
        now_ms.saturating_sub(at) as f64 / 1000.0
    }

    /// Instances with their last report's age in ms at unix time `now_ms`, and how
    /// many of them are fresh.
    pub fn instances_seen(&self, now_ms: u64) -> (Vec<(String, u64)>, usize) {
        let seen = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        let list: Vec<(String, u64)> = seen
            .iter()
            .map(|(name, at)| (name.clone(), now_ms.saturating_sub(*at)))
            .collect();
        let fresh = list
            .iter()
            .filter(|(_, age)| *age <= Self::INSTANCE_FRESH_MS)
            .count();
        (list, fresh)
    }
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
    /// Graceful shutdown has begun: every response from now on says `Connection: close`
    /// so keep-alive clients reconnect elsewhere instead of losing their next request.
    pub draining: AtomicBool,
    /// Origin of the millisecond clock used by windows.
    pub epoch: Instant,
    /// The fleet's status (`[fleet]`).
    pub fleet: Arc<FleetStatus>,
    /// One WARN per 10 s about refused tokens and forces (counted in
    /// `abgate_refused_total`): a guessing attempt leaves a trace without flooding.
    pub refusal_log: crate::ratelog::RateLog,
    /// One ERROR line per second about failed requests (each is counted anyway).
    pub failure_log: crate::ratelog::RateLog,
    /// Where [`App::decide`] hands a decision for the fleet to share (set once by the
    /// fleet's decision store; without it decisions stay local).
    pub fleet_decisions: OnceLock<tokio::sync::mpsc::UnboundedSender<Decision>>,
    /// Unix time (ms) at start.
    pub started_unix_ms: u64,
    pub(super) reload_lock: Mutex<()>,
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
            draining: AtomicBool::new(false),
            epoch: Instant::now(),
            fleet: Arc::new(FleetStatus::default()),
            refusal_log: crate::ratelog::RateLog::new(std::time::Duration::from_secs(10)),
            failure_log: crate::ratelog::RateLog::new(std::time::Duration::from_secs(1)),
            fleet_decisions: OnceLock::new(),
            started_unix_ms: unix_ms(std::time::SystemTime::now()),
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
}

impl App {
    /// Count and (rate-limited) log a refusal: `reason` is its `abgate_refused_total`
    /// label, `what` says what was refused, `from` the client's address.
    pub fn refused(&self, reason: &str, what: &str, from: &str) {
        self.metrics.refused.with_label_values(&[reason]).inc();
        if let Some(n) = self.refusal_log.hit() {
            tracing::warn!(
                "refused {n} request(s) with a wrong token or force since the last report; latest: {what} from {from} (abgate_refused_total counts them by reason)"
            );
        }
    }
}

/// Milliseconds since the unix epoch at `t` (0 before it).
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Count a request in flight for the duration of the guard.
pub struct InflightGuard(pub Arc<App>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Relaxed);
    }
}
