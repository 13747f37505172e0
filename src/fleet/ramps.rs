//! One step for the whole fleet: every ramp's state is kept in the fleet's bucket under
//! `ramp.<experiment>`, like the decisions.
//!
//! - A transition taken here ([`App::ramp_update`]: the gate, the admin API) is written
//!   to the bucket with its generation (each transition increments it), by a
//!   compare-and-set on the revision read, so of two sidecars advancing the same step at
//!   once one wins; the other adopts the winner's state at its next look.
//! - Every 500 ms each sidecar reads the keys of its ramped experiments: a state of a
//!   higher generation (or of the same generation but different, the broker's copy being
//!   the one that won) replaces the local one — persisted, served at once, exported —
//!   without a `ramp` event (its taker wrote it); a local state ahead of the bucket is
//!   published.
//! - Cut off from the broker, a sidecar ramps on its own (its gate, its admin API) and
//!   publishes where it got to when the broker returns; a higher generation elsewhere
//!   wins then.
//!
//! Nothing here is on the request path; every broker operation is bounded.

use super::decisions::bucket::{bounded, cached as bucket};
use super::FleetConn;
use crate::guard::ramp::RampState;
use crate::runtime::App;
use async_nats::jetstream::kv;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How often the ramps' keys are read.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// The bucket key of the ramp of `experiment`.
pub fn ramp_key(experiment: &str) -> String {
    format!("ramp.{experiment}")
}

/// Start sharing this sidecar's ramps on `conn`: from now on [`App::ramp_update`] hands
/// every new ramp state here.
pub fn spawn(app: Arc<App>, conn: Arc<FleetConn>, mut shutdown: watch::Receiver<bool>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, RampState)>();
    if app.fleet_ramps.set(tx).is_err() {
        return;
    }
    tokio::spawn(async move {
        let mut kv: Option<kv::Store> = None;
        let mut tick = tokio::time::interval(LOOK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some((name, s)) => {
                        if let Some(kv) = bucket(&conn, &mut kv).await {
                            sync(&app, &kv, &name, Some(s)).await;
                        }
                    }
                    None => return,
                },
                _ = tick.tick() => {
                    let Some(kv) = bucket(&conn, &mut kv).await else { continue };
                    let names: Vec<String> = app
                        .snapshot
                        .load()
                        .live_experiments()
                        .filter(|e| e.config.ramp.is_some())
                        .map(|e| e.config.name.to_string())
                        .collect();
                    for name in names {
                        sync(&app, &kv, &name, None).await;
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    });
}

/// Bring ramp `name` and its bucket key together: adopt the bucket's state when it is
/// ahead (or won a tie), publish the local one (`local`, or the store's) when it is.
async fn sync(app: &Arc<App>, kv: &kv::Store, name: &str, local: Option<RampState>) {
    let Some(local) = local.or_else(|| app.guard.ramps.get(name)) else {
        return;
    };
    let key = ramp_key(name);
    let entry = match bounded(kv.entry(key.as_str())).await {
        Ok(Ok(e)) => e.filter(|e| e.operation == kv::Operation::Put),
        _ => return,
    };
    let theirs = entry.as_ref().and_then(|e| {
        serde_json::from_slice::<RampState>(&e.value)
            .ok()
            .map(|s| (e.revision, s))
    });
    let same =
        |a: &RampState, b: &RampState| serde_json::to_value(a).ok() == serde_json::to_value(b).ok();
    match theirs {
        Some((_, t)) if t.generation >= local.generation => {
            if !same(&t, &local) {
                // The store fsyncs: off the async threads.
                let (app, name) = (app.clone(), name.to_string());
                let _ = tokio::task::spawn_blocking(move || adopt(&app, &name, t)).await;
            }
        }
        other => {
            let body = match serde_json::to_vec(&local) {
                Ok(b) => b,
                Err(_) => return,
            };
            let written = match other {
                Some((revision, _)) => bounded(kv.update(key.as_str(), body.into(), revision))
                    .await
                    .map(|r| r.is_ok()),
                None => bounded(kv.create(key.as_str(), body.into()))
                    .await
                    .map(|r| r.is_ok()),
            };
            if written != Ok(true) {
                tracing::debug!(
                    "fleet: ramp {name}: another sidecar wrote first; adopting at the next look"
                );
            }
        }
    }
}

/// Take the fleet's state of ramp `name`: persisted, served, exported; logged, no event.
fn adopt(app: &App, name: &str, s: RampState) {
    let snap = app.snapshot.load();
    let Some(exp) = snap.find(name) else {
        return;
    };
    if let Err(e) = app.guard.ramps.replace(name, s.clone()) {
        tracing::error!("{e}; the fleet's step of {name} holds until a restart");
    }
    app.ramp_serve(exp, &s);
    tracing::info!(
        "fleet: ramp {name}: step {} (traffic {}, {}) adopted from the fleet",
        s.step,
        s.traffic,
        s.status.as_str()
    );
}
