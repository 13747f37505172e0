//! The fleet: many sidecars, one experiment, through NATS JetStream (`[fleet]`).
//!
//! | file | what |
//! |---|---|
//! | [`conn`] | the broker connection: connects in the background, reconnects with jittered backoff, never blocks start-up or requests |
//! | [`decisions`] | the decision store: rollbacks, pauses and resumes shared through the key-value bucket, applied by every sidecar |
//!
//! Everything here runs beside the request path: the proxy never waits on the broker.
//! A sidecar without `[fleet]` starts none of it. What the admin API shows of the fleet
//! lives in [`crate::runtime::FleetStatus`], which this module writes and the admin API
//! reads (the admin API does not depend on this module).

pub mod conn;
pub mod decisions;

pub use conn::FleetConn;

use crate::config::FleetSettings;
use crate::runtime::App;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Join the fleet: mark it in the status the admin API reads and start the broker
/// connection (it comes up in the background; an unreachable broker is no error).
/// `None` only if the client cannot even be set up.
pub async fn connect(app: &Arc<App>, settings: &FleetSettings) -> Option<Arc<FleetConn>> {
    app.fleet.enabled.store(true, Relaxed);
    let _ = app.fleet.instance.set(settings.instance.clone());
    match FleetConn::start(settings, app.fleet.clone()).await {
        Ok(conn) => Some(conn),
        Err(e) => {
            tracing::warn!(
                "fleet: cannot set up the broker connection ({e}); serving with local decisions only"
            );
            None
        }
    }
}
