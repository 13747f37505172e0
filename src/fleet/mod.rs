//! The fleet: many sidecars, one experiment, through NATS JetStream (`[fleet]`).
//!
//! | file | what |
//! |---|---|
//! | [`conn`] | the broker connection: connects in the background, reconnects with jittered backoff, never blocks start-up or requests |
//! | [`shipper`] | ships the local event log to the stream, at least once, from a checkpoint |
//! | [`log`] | the event files as the shipper reads them: positions, the checkpoint file, the `max_backlog` skip |
//! | [`publisher`] | the broker the shipper publishes to (a trait; JetStream implements it) |
//! | [`windows`] | shared guardrail windows (`share_windows`): each sidecar's windows published to the bucket, the others' kept for the guardrail checks |
//! | [`decisions`] | the decision store: rollbacks, pauses and resumes shared through the key-value bucket, applied by every sidecar |
//!
//! Everything here runs beside the request path: the proxy never waits on the broker.
//! A sidecar without `[fleet]` starts none of it. What the admin API shows of the fleet
//! lives in [`crate::runtime::FleetStatus`], which this module writes and the admin API
//! reads (the admin API does not depend on this module).

pub mod conn;
pub mod decisions;
pub mod log;
pub mod publisher;
pub mod shipper;
pub mod windows;

pub use conn::FleetConn;
pub use publisher::{JetStream, Publisher, ShipError};
pub use shipper::{Shipper, ShipperOptions};

use crate::config::FleetSettings;
use crate::runtime::App;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The fleet tasks of a running sidecar: one broker connection, shared by the
/// shipper and the decision store.
pub struct Fleet {
    /// The broker connection.
    pub conn: Arc<FleetConn>,
    shipper: Option<(shipper::StopSignal, tokio::task::JoinHandle<log::Pos>)>,
}

impl Fleet {
    /// Join the fleet: mark it in the status the admin API reads, start the broker
    /// connection (it comes up in the background; an unreachable broker is no error),
    /// the shipper when `ship_events` is on, and the decision store. `None` (with a
    /// WARN) only if the client cannot even be set up: the sidecar then serves with
    /// local events and decisions.
    pub async fn start(
        app: &Arc<App>,
        settings: &FleetSettings,
        events_dir: &Path,
        state_dir: &Path,
        shutdown: watch::Receiver<bool>,
    ) -> Option<Fleet> {
        app.fleet.enabled.store(true, Relaxed);
        app.fleet
            .share_windows
            .store(settings.share_windows, Relaxed);
        let _ = app.fleet.instance.set(settings.instance.clone());
        let conn = match FleetConn::start(settings, app.fleet.clone()).await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(
                    "fleet: cannot set up the broker connection ({e}); serving with local events and decisions only"
                );
                return None;
            }
        };
        let shipper = settings.ship_events.then(|| {
            let mut opts =
                ShipperOptions::new(events_dir.to_path_buf(), state_dir, settings.max_backlog);
            opts.instance = settings.instance.clone();
            let publisher = Arc::new(JetStream::new(conn.clone(), &settings.stream));
            let (s, stop) = Shipper::new(opts, publisher, app.fleet.clone());
            (stop, tokio::spawn(s.run()))
        });
        decisions::spawn(app.clone(), conn.clone(), shutdown);
        Some(Fleet { conn, shipper })
    }

    /// Stop: the shipper ships what the writer left (for at most `grace`), records its
    /// checkpoint and ends. Call after the event writer has drained.
    pub async fn stop(self, grace: Duration) {
        if let Some((stop, task)) = self.shipper {
            let _ = stop.send(Some(Instant::now() + grace));
            // the shipper honours the deadline; the margin covers a checkpoint write
            let _ = tokio::time::timeout(grace + Duration::from_secs(2), task).await;
        }
    }
}
