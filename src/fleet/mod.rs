//! The fleet: many sidecars, one experiment, through NATS JetStream (`[fleet]`).
//!
//! | file | what |
//! |---|---|
//! | [`conn`] | the broker connection: connects in the background, reconnects with jittered backoff, never blocks start-up or requests |
//! | [`shipper`] | ships the local event log to the stream, at least once, from a checkpoint |
//! | [`log`] | the event files as the shipper reads them: positions, the checkpoint file, the `max_backlog` skip |
//! | [`publisher`] | the broker the shipper publishes to (a trait; JetStream implements it) |
//! | [`windows`] | shared guardrail windows (`share_windows`): each sidecar's windows published to the bucket, the others' kept for the guardrail checks |
//! | [`bandits`] | bandit periods shared (`bandit.<experiment>.…`): each period written once, opened by every sidecar, computed from every sidecar's counters |
//! | [`decisions`] | the decision store: rollbacks, pauses and resumes shared through the key-value bucket, applied by every sidecar |
//!
//! Everything here runs beside the request path: the proxy never waits on the broker.
//! A sidecar without `[fleet]` starts none of it. What the admin API shows of the fleet
//! lives in [`crate::runtime::FleetStatus`], which this module writes and the admin API
//! reads (the admin API does not depend on this module).

pub mod bandits;
pub mod conn;
pub mod decisions;
pub mod line;
pub mod log;
pub mod publisher;
pub mod ramps;
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

/// The fleet tasks of a running sidecar, on a thread of their own (`abgate-fleet`, one
/// current-thread runtime): the broker connection, the shipper and the decision store.
/// Their socket reads and writes, JSON, log reads and state-file writes never run on
/// the proxy's threads, so a broker that floods or stalls the connection cannot take
/// CPU time from requests scheduled beside it.
pub struct Fleet {
    /// The broker connection.
    pub conn: Arc<FleetConn>,
    shipper: Option<shipper::StopSignal>,
    /// Resolves when the fleet thread's work is over.
    done: tokio::sync::oneshot::Receiver<()>,
}

impl Fleet {
    /// Join the fleet: mark it in the status the admin API reads, start the fleet
    /// thread with the broker connection (it comes up in the background; an
    /// unreachable broker is no error), the shipper when `ship_events` is on, and the
    /// decision store. `None` (with a WARN) only if the client or the thread cannot
    /// even be set up: the sidecar then serves with local events and decisions.
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
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let (app, settings) = (app.clone(), settings.clone());
        let (events_dir, state_dir) = (events_dir.to_path_buf(), state_dir.to_path_buf());
        let thread = std::thread::Builder::new()
            .name("abgate-fleet".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = started_tx.send(Err(format!("cannot start its runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let conn = match FleetConn::start(&settings, app.fleet.clone()).await {
                        Ok(conn) => conn,
                        Err(e) => {
                            let _ = started_tx
                                .send(Err(format!("cannot set up the broker connection: {e}")));
                            return;
                        }
                    };
                    let (stop, ship) = match settings.ship_events {
                        true => {
                            let mut opts =
                                ShipperOptions::new(events_dir, &state_dir, settings.max_backlog);
                            opts.instance = settings.instance.clone();
                            let publisher = JetStream::new(conn.clone(), &settings.stream);
                            let (s, stop) = Shipper::new(opts, publisher, app.fleet.clone());
                            (Some(stop), Some(tokio::spawn(s.run())))
                        }
                        false => (None, None),
                    };
                    ramps::spawn(app.clone(), conn.clone(), shutdown.clone());
                    bandits::spawn(app.clone(), conn.clone(), shutdown.clone());
                    decisions::spawn(app, conn.clone(), shutdown.clone());
                    let _ = started_tx.send(Ok((conn, stop)));
                    match ship {
                        // the shipper ends after its stop signal (the log is complete then)
                        Some(task) => {
                            let _ = task.await;
                        }
                        None => {
                            let mut shutdown = shutdown;
                            let _ = shutdown.wait_for(|stop| *stop).await;
                        }
                    }
                });
                // the decision store's last writes finish with the runtime's tasks
                rt.shutdown_timeout(Duration::from_secs(1));
                let _ = done_tx.send(());
            });
        if let Err(e) = thread {
            tracing::warn!(
                "fleet: cannot start its thread ({e}); serving with local events and decisions only"
            );
            return None;
        }
        match started.await {
            Ok(Ok((conn, shipper))) => Some(Fleet {
                conn,
                shipper,
                done,
            }),
            Ok(Err(e)) => {
                tracing::warn!("fleet: {e}; serving with local events and decisions only");
                None
            }
            Err(_) => None,
        }
    }

    /// Stop: the shipper ships what the writer left (for at most `grace`), records its
    /// checkpoint and ends, then the fleet thread. Call after the event writer has
    /// drained and the shutdown signal was sent.
    pub async fn stop(self, grace: Duration) {
        if let Some(stop) = &self.shipper {
            let _ = stop.send(Some(Instant::now() + grace));
        }
        // the shipper honours the deadline; the margin covers a checkpoint write and
        // the runtime's shutdown
        let _ = tokio::time::timeout(grace + Duration::from_secs(3), self.done).await;
    }
}
