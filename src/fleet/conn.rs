//! The broker connection of a sidecar.
//!
//! `async-nats` connects in the background (`retry_on_initial_connect`), so an
//! unreachable broker at start is a warning, not a failure: the sidecar serves with its
//! local state while the client keeps trying, with jittered exponential backoff capped
//! at 5 s, and reconnects the same way after any later disconnect. Users of the
//! connection (the shipper, the decision store) take the client and JetStream context
//! from here and treat every operation as fallible.

use crate::config::FleetSettings;
use crate::runtime::FleetStatus;
use async_nats::jetstream;
use rand::Rng;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// A sidecar's connection to the fleet's broker.
pub struct FleetConn {
    /// The settings it was made with.
    pub settings: FleetSettings,
    client: async_nats::Client,
    js: jetstream::Context,
}

impl FleetConn {
    /// Start connecting to `settings.nats_urls` (returns at once; the connection comes
    /// up in the background). `status.connected` follows the connection's state.
    pub async fn start(
        settings: &FleetSettings,
        status: Arc<FleetStatus>,
    ) -> Result<Arc<FleetConn>, async_nats::ConnectError> {
        let events = status.clone();
        let options = async_nats::ConnectOptions::new()
            .name(format!("abgate {}", settings.instance))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .reconnect_delay_callback(backoff)
            .event_callback(move |e| {
                let events = events.clone();
                async move {
                    match e {
                        async_nats::Event::Connected => {
                            events.connected.store(true, Relaxed);
                            events.connects.fetch_add(1, Relaxed);
                            tracing::info!("fleet: connected to the broker");
                        }
                        async_nats::Event::Disconnected => {
                            events.connected.store(false, Relaxed);
                            tracing::warn!(
                                "fleet: disconnected from the broker; serving with local state, reconnecting"
                            );
                        }
                        other => tracing::debug!("fleet: {other}"),
                    }
                }
            });
        let client = options.connect(settings.nats_urls.join(",")).await?;
        let js = jetstream::new(client.clone());
        Ok(Arc::new(FleetConn {
            settings: settings.clone(),
            client,
            js,
        }))
    }

    /// The NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Whether the connection is up now.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}

/// Reconnect delay after `attempts` failures: exponential from 50 ms, capped at 5 s,
/// with ±50% jitter so a fleet that lost its broker does not return in lockstep.
pub fn backoff(attempts: usize) -> Duration {
    let base = 50u64.saturating_mul(1 << attempts.min(7)).min(5_000);
    let jitter = rand::rng().random_range(0.5..1.5);
    Duration::from_millis((base as f64 * jitter) as u64)
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        for attempts in 0..40 {
            let d = backoff(attempts);
            let base = (50u64 << attempts.min(7)).min(5_000);
            assert!(d >= Duration::from_millis(base / 2), "{attempts}: {d:?}");
            assert!(
                d <= Duration::from_millis(base * 3 / 2),
                "{attempts}: {d:?}"
            );
        }
        let spread: std::collections::HashSet<_> = (0..50).map(|_| backoff(10)).collect();
        assert!(spread.len() > 10, "no jitter");
    }
}
