//! Shared guardrail windows (`[fleet] share_windows`): every sidecar publishes its window
//! of each variant to the bucket every `check_interval`, and keeps the windows the others
//! publish in [`crate::runtime::FleetStatus::windows`], where the guardrail checks sum the
//! fresh ones ([`crate::runtime::FleetStatus::peer_windows`]).
//!
//! - **Key:** `window.<experiment>.<variant>.<instance>`, one per sidecar and variant
//!   (each sidecar writes only its own keys, so a plain `put` suffices).
//! - **Value:** the publisher's whole sliding window (requests, errors, the latency
//!   histogram as `[bucket, count]` pairs) and its last-100 counts, with `since_unix_ms`
//!   (when its data starts: start-up or the last resume) and `unix_ms` (when written).
//!   Summing whole windows is the same as summing their slices, and one key per variant
//!   keeps the bucket's size fixed whatever the window's length.
//! - **Freshness** is judged on the receiver's clock: a window not updated for two check
//!   intervals is left out, so a silent or cut-off sidecar stops counting, and a
//!   sidecar cut off from the broker judges its own traffic alone.
//! - **After a resume** a window whose data starts before the resume is left out, so old
//!   errors never roll the variant back again.
//! - Keys of sidecars gone for an hour (windows and heartbeats) are deleted by whoever
//!   reads them, so a fleet that redeploys every day does not grow its bucket forever.

use crate::guard::window::WindowStats;
use crate::runtime::{unix_ms, App, PeerWindow};
use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

/// Prefix of the window keys.
pub const WINDOW_PREFIX: &str = "window.";
/// A window or heartbeat key not written for this long belongs to a sidecar that is
/// gone: deleted at the next full read.
pub const GONE_AFTER_MS: u64 = 3_600_000;

/// One variant's window as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowReport {
    /// Unix time (ms) when written.
    pub unix_ms: u64,
    /// Unix time (ms) from which the window holds data.
    pub since_unix_ms: u64,
    /// Requests in the window.
    pub n: u64,
    /// Errors in the window.
    pub errors: u64,
    /// Non-empty latency buckets: `[bucket index, count]`.
    pub hist: Vec<(u16, u64)>,
    /// Requests among the last 100 (≤ 100).
    pub recent_n: u64,
    /// Errors among them.
    pub recent_errors: u64,
}

impl WindowReport {
    fn new(stats: &WindowStats, recent: (u64, u64), since_unix_ms: u64, now: u64) -> Self {
        WindowReport {
            unix_ms: now,
            since_unix_ms,
            n: stats.n,
            errors: stats.errors,
            hist: stats
                .hist
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, c)| (i as u16, *c))
                .collect(),
            recent_n: recent.0,
            recent_errors: recent.1,
        }
    }

    fn stats(&self) -> WindowStats {
        let mut hist = vec![0; crate::guard::window::LAT_BUCKETS];
        for &(i, c) in &self.hist {
            if let Some(h) = hist.get_mut(i as usize) {
                *h += c;
            }
        }
        WindowStats {
            n: self.n,
            errors: self.errors,
            hist,
        }
    }
}

/// The key of `instance`'s window of `variant` of `experiment`.
pub fn window_key(experiment: &str, variant: &str, instance: &str) -> String {
    format!("{WINDOW_PREFIX}{experiment}.{variant}.{instance}")
}

/// `(experiment, variant, instance)` of a window key (after its prefix). Names hold no
/// dots, so the split is unambiguous.
fn parse_key(rest: &str) -> Option<(&str, &str, &str)> {
    let mut it = rest.splitn(3, '.');
    Some((it.next()?, it.next()?, it.next()?))
}

/// What this sidecar publishes, and when it last did, per experiment.
#[derive(Default)]
pub struct Publisher {
    last: HashMap<String, Instant>,
}

impl Publisher {
    /// The windows due now: each experiment with guardrails whose `check_interval`
    /// has passed since its last publication, every variant of it.
    pub fn due(&mut self, app: &App, instance: &str) -> Vec<(String, WindowReport)> {
        let snap = app.snapshot.load();
        let (now, now_ms, unix) = (Instant::now(), app.now_ms(), unix_ms(SystemTime::now()));
        let mut out = Vec::new();
        for exp in snap.live_experiments() {
            let Some(g) = &exp.config.guardrails else {
                continue;
            };
            let due = self
                .last
                .get(&*exp.config.name)
                .is_none_or(|t| now.duration_since(*t) >= g.check_interval);
            if !due {
                continue;
            }
            self.last.insert(exp.config.name.to_string(), now);
            let state = exp.state();
            let since = state.window_since_unix_ms();
            for v in &state.variants {
                let report =
                    WindowReport::new(&v.window.stats(now_ms), v.window.recent(), since, unix);
                out.push((window_key(&exp.config.name, &v.name, instance), report));
            }
        }
        out
    }

    /// Write the windows that are due to the bucket (each bounded by [`PUT_TIMEOUT`]:
    /// a lost write is replaced by the next interval's).
    pub async fn publish(&mut self, app: &App, instance: &str, kv: &kv::Store) {
        for (key, report) in self.due(app, instance) {
            let Ok(body) = serde_json::to_vec(&report) else {
                continue;
            };
            match tokio::time::timeout(PUT_TIMEOUT, kv.put(key.as_str(), body.into())).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::debug!("fleet: window {key}: {e}"),
                Err(_) => tracing::debug!("fleet: window {key}: timed out"),
            }
        }
    }
}

/// A window key read from the bucket (watch or full read): keep another sidecar's
/// window, forget a deleted one. A revision already held is no news (a full read must
/// not make an old window look fresh).
pub fn received(app: &App, own_instance: &str, e: &kv::Entry) {
    let Some((exp, variant, instance)) = e.key.strip_prefix(WINDOW_PREFIX).and_then(parse_key)
    else {
        return;
    };
    if instance == own_instance {
        return;
    }
    let mut windows = app.fleet.windows.lock().unwrap_or_else(|p| p.into_inner());
    let peers = windows
        .entry((exp.to_string(), variant.to_string()))
        .or_default();
    if e.operation != kv::Operation::Put {
        peers.remove(instance);
        return;
    }
    if peers
        .get(instance)
        .is_some_and(|w| w.revision >= e.revision)
    {
        return;
    }
    let report: WindowReport = match serde_json::from_slice(&e.value) {
        Ok(r) => r,
        Err(err) => {
            tracing::warn!("fleet: ignoring unreadable window {}: {err}", e.key);
            return;
        }
    };
    peers.insert(
        instance.to_string(),
        PeerWindow {
            received: Instant::now(),
            revision: e.revision,
            since_unix_ms: report.since_unix_ms,
            stats: report.stats(),
            recent: (report.recent_n, report.recent_errors),
        },
    );
}

/// Whether a window or heartbeat entry was last written more than [`GONE_AFTER_MS`]
/// before `now` (by the `unix_ms` in its value): its sidecar is gone.
pub fn is_gone(e: &kv::Entry, now: u64) -> bool {
    if e.operation != kv::Operation::Put {
        return false;
    }
    let written = serde_json::from_slice::<serde_json::Value>(&e.value)
        .ok()
        .and_then(|v| v["unix_ms"].as_u64());
    written.is_some_and(|t| now.saturating_sub(t) > GONE_AFTER_MS)
}

/// Whether sharing windows is on for this sidecar.
pub fn sharing(app: &App) -> bool {
    app.fleet.share_windows.load(Relaxed)
}

/// How long a window write may take before it is given up (the next interval writes
/// a newer one anyway).
pub const PUT_TIMEOUT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_carries_the_window_and_reads_back_the_same() {
        let mut stats = WindowStats {
            n: 7,
            errors: 2,
            hist: vec![0; crate::guard::window::LAT_BUCKETS],
        };
        stats.hist[3] = 5;
        stats.hist[100] = 2;
        let r = WindowReport::new(&stats, (7, 2), 1_000, 2_000);
        assert_eq!(r.hist, vec![(3, 5), (100, 2)]);
        let back: WindowReport = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(back.stats(), stats);
        assert_eq!((back.recent_n, back.recent_errors), (7, 2));
    }

    #[test]
    fn window_keys_split_back_into_their_names() {
        let k = window_key("ranker_v2", "treatment", "pod-a");
        assert_eq!(k, "window.ranker_v2.treatment.pod-a");
        assert_eq!(
            parse_key(k.strip_prefix(WINDOW_PREFIX).unwrap()),
            Some(("ranker_v2", "treatment", "pod-a"))
        );
        assert_eq!(parse_key("a.b"), None);
    }
}
