//! The runtime: process-wide shared state ([`App`]) and the current config generation
//! ([`Snapshot`]), swapped atomically on reload.
//!
//! [`App`] holds what lives for the whole process (metrics, event sink, guard state) and
//! an `ArcSwap<Snapshot>`: everything derived from one config generation. The proxy, the
//! admin API and the control loops all read it; none of them depends on another.
//! Decisions about variants go through one function, [`App::decide`].

mod bandit;
mod decide;
mod ramp;
mod reload;
pub mod shadow;
mod snapshot;
pub mod upstream;

pub use bandit::{export_bandit_gauges, AnnouncedPeriods};
pub use snapshot::{build_snapshot, ExperimentRuntime, Live, Snapshot};

use crate::config::Config;
use crate::events::EventSink;
use crate::guard::window::WindowStats;
use crate::guard::{Decision, Guard};
use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, HashMap};
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
    /// The shipper's checkpoint: file name and byte offset acknowledged by the stream.
    pub checkpoint: Mutex<Option<(String, u64)>>,
    /// `share_windows`: the guardrails judge this sidecar's windows plus the fresh
    /// windows of the others ([`FleetStatus::peer_windows`]).
    pub share_windows: AtomicBool,
    /// Windows other sidecars published: (experiment, variant) → instance → window.
    /// Written by the fleet's store, read by the guardrail checks (off the request path).
    pub windows: Mutex<HashMap<(String, String), HashMap<String, PeerWindow>>>,
    /// The fleet opens the bandits' periods (`crate::fleet::bandits`): the control loop
    /// leaves them alone.
    pub bandits: AtomicBool,
}

/// Another sidecar's window of one variant, as last received.
#[derive(Debug, Clone)]
pub struct PeerWindow {
    /// When this sidecar received it (freshness is judged on this clock alone).
    pub received: Instant,
    /// The bucket revision it came in (a full read of the same revision is no news).
    pub revision: u64,
    /// Unix time (ms) from which the publisher's window holds data.
    pub since_unix_ms: u64,
    /// Requests, errors and latency histogram in the publisher's window.
    pub stats: WindowStats,
    /// (requests, errors) among the publisher's last 100 requests (the breaker).
    pub recent: (u64, u64),
}

/// The sum of the fresh windows of other sidecars for one variant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerSum {
    /// Their windows added up.
    pub stats: WindowStats,
    /// Their recent (requests, errors) added up.
    pub recent: (u64, u64),
    /// How many sidecars contributed.
    pub instances: usize,
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

    /// Instance `name` was alive at unix time `at_ms` (its heartbeat, or this
    /// sidecar's own).
    pub fn saw(&self, name: &str, at_ms: u64) {
        let mut seen = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert(name.to_string(), at_ms);
    }

    /// Instance `name` is no longer listed (its heartbeat was deleted or unreadable).
    pub fn forget(&self, name: &str) {
        let mut seen = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        seen.remove(name);
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

    /// The other sidecars' windows of `variant` of `experiment` received within `fresh`
    /// and starting at or after `resumed_unix_ms` (the last resume known here), summed.
    pub fn peer_windows(
        &self,
        experiment: &str,
        variant: &str,
        fresh: std::time::Duration,
        resumed_unix_ms: u64,
    ) -> PeerSum {
        let mut sum = PeerSum::default();
        let windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let Some(peers) = windows.get(&(experiment.to_string(), variant.to_string())) else {
            return sum;
        };
        for w in peers.values() {
            if w.received.elapsed() > fresh || w.since_unix_ms < resumed_unix_ms {
                continue;
            }
            sum.stats.add(&w.stats);
            sum.recent.0 += w.recent.0;
            sum.recent.1 += w.recent.1;
            sum.instances += 1;
        }
        sum
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
    /// Where [`App::ramp_update`] hands a ramp's new state for the fleet to share (set
    /// once by the fleet's decision store; without it ramps stay local).
    pub fleet_ramps:
        OnceLock<tokio::sync::mpsc::UnboundedSender<(String, crate::guard::ramp::RampState)>>,
    /// Unix time (ms) at start.
    pub started_unix_ms: u64,
    /// Live shadow state per variant, kept across reloads.
    pub shadows: shadow::ShadowStore,
    /// The bandit periods whose `bandit` event this process has written.
    pub bandit_periods: AnnouncedPeriods,
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
        let shadows = shadow::ShadowStore::default();
        let snap = build_snapshot(Arc::new(config), &guard, &metrics, &shadows)?;
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
            fleet_ramps: OnceLock::new(),
            started_unix_ms: unix_ms(std::time::SystemTime::now()),
            shadows,
            bandit_periods: AnnouncedPeriods::default(),
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

pub use crate::guard::unix_ms;

/// Count a request in flight for the duration of the guard.
pub struct InflightGuard(pub Arc<App>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn window(n: u64, errors: u64, since: u64, age: Duration) -> PeerWindow {
        PeerWindow {
            received: Instant::now() - age,
            revision: 1,
            since_unix_ms: since,
            stats: WindowStats {
                n,
                errors,
                hist: vec![n],
            },
            recent: (n.min(100), errors.min(100)),
        }
    }

    #[test]
    fn peer_windows_sum_the_fresh_ones_that_start_after_the_last_resume() {
        let f = FleetStatus::default();
        let key = ("exp".to_string(), "b".to_string());
        f.windows.lock().unwrap().insert(
            key,
            HashMap::from([
                ("fresh".to_string(), window(100, 10, 5_000, Duration::ZERO)),
                (
                    "fresh2".to_string(),
                    window(50, 5, 9_000, Duration::from_millis(500)),
                ),
                (
                    "silent".to_string(),
                    window(1000, 900, 5_000, Duration::from_secs(3)),
                ),
                (
                    "before_resume".to_string(),
                    window(70, 70, 1_000, Duration::ZERO),
                ),
            ]),
        );
        let fresh = Duration::from_secs(2);
        let s = f.peer_windows("exp", "b", fresh, 2_000);
        assert_eq!(s.instances, 2);
        assert_eq!((s.stats.n, s.stats.errors), (150, 15));
        assert_eq!(s.stats.hist, vec![150]);
        assert_eq!(s.recent, (150, 15));
        // No resume known here: the older window counts too.
        assert_eq!(f.peer_windows("exp", "b", fresh, 0).instances, 3);
        assert_eq!(f.peer_windows("exp", "other", fresh, 0), PeerSum::default());
    }
}
