//! The heartbeats: each sidecar writes `instance.<name>` every 2 s and notes the
//! others' (the instances seen); heartbeats that keep failing remake the connection.

use super::bucket::bounded;
use super::plan::instance_key;
use super::{Store, SILENT_HEARTBEATS};
use crate::runtime::unix_ms;
use async_nats::jetstream::kv;
use std::time::{Instant, SystemTime};

impl Store {
    pub(super) fn heard_from(&self, name: &str, e: &kv::Entry) {
        let at = serde_json::from_slice::<serde_json::Value>(&e.value)
            .ok()
            .and_then(|v| v["unix_ms"].as_u64());
        match (e.operation, at) {
            (kv::Operation::Put, Some(at)) => self.app.fleet.saw(name, at),
            _ => self.app.fleet.forget(name),
        }
    }

    pub(super) async fn heartbeat(&mut self, kv: &kv::Store) {
        self.last_heartbeat = Some(Instant::now());
        let now = unix_ms(SystemTime::now());
        let body = serde_json::json!({ "unix_ms": now }).to_string();
        match bounded(kv.put(instance_key(&self.instance), body.into())).await {
            Ok(Ok(_)) => {
                self.heartbeat_failures = 0;
                self.app.fleet.saw(&self.instance, now);
            }
            Ok(Err(e)) => self.heartbeat_failed(e.to_string()).await,
            Err(e) => self.heartbeat_failed(e).await,
        }
    }

    /// A heartbeat that failed. The client's own pings never fire while the
    /// sidecar keeps writing (each write restarts their timer), so a connection whose
    /// packets vanish would look up forever: after [`SILENT_HEARTBEATS`] failures in a
    /// row the connection is dropped and made again.
    async fn heartbeat_failed(&mut self, e: String) {
        self.heartbeat_failures += 1;
        tracing::debug!("fleet: heartbeat: {e}");
        if self.heartbeat_failures >= SILENT_HEARTBEATS {
            self.heartbeat_failures = 0;
            tracing::warn!(
                "fleet: the broker has not answered {SILENT_HEARTBEATS} heartbeats in a row ({e}); reconnecting"
            );
            let _ = bounded(self.conn.client().force_reconnect()).await;
        }
    }
}
