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
use crate::guard::Guard;
use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
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

/// Count a request in flight for the duration of the guard.
pub struct InflightGuard(pub Arc<App>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Relaxed);
    }
}
