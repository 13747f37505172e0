//! One weight history for the whole fleet: every bandit period is written once to the
//! fleet's bucket and every sidecar serves it.
//!
//! - **Keys.** Period `p` of experiment `e` is `bandit.<e>.<fingerprint>.<p>`
//!   ([`period_key`]), written by KV `create` (once: of two sidecars computing the same
//!   period, one wins and the other opens the winner's). The fingerprint
//!   ([`BanditState::fingerprint`]) follows the arms and the reward, so a changed
//!   experiment starts a history of its own. Each sidecar also overwrites
//!   `bandit.<e>.<fingerprint>.open.<instance>` ([`open_key`]) with its counters of the
//!   open period.
//! - **Every 250 ms** each sidecar looks at the key after the last period it knows to
//!   be the fleet's: a period there is opened at once (history replaced from the first
//!   period that differs, table replayed, persisted, exported; no second log line of
//!   the computation), so the fleet switches together and the period boundaries are the
//!   fleet's. A sidecar that starts with an empty or shorter history walks the keys from
//!   period 0 and ends with the fleet's history and table.
//! - **Due.** When the open period has lasted `update_interval` (and the experiment is
//!   not paused), the sidecar sums its counters and the latest published counters of
//!   every other sidecar seen in the bucket for the same period ([`merge`]), computes
//!   the next period from them (off the async thread), and creates its key; the entry
//!   carries the summed counters, which become the closed period's statistics
//!   everywhere, so every sidecar's posterior is the fleet's.
//! - **Local periods the bucket lacks** (the first sidecar's period 0, a history kept
//!   from before `[fleet]`) are written the same way, oldest first.
//! - **Cut off from the broker** a sidecar opens no period: it serves its open period
//!   and keeps counting; it catches up when the broker returns. The control loop leaves
//!   bandits to this task as soon as it runs ([`crate::runtime::FleetStatus::bandits`]).
//!
//! Nothing here is on the request path; every broker operation is bounded.

use super::decisions::bucket::{bounded, cached as bucket};
use super::FleetConn;
use crate::guard::bandit::fleet::{merge, FleetPeriod, OpenCounters};
use crate::guard::bandit::BanditState;
use crate::runtime::{unix_ms, App};
use async_nats::jetstream::kv;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// How often the bandits' keys are read.
const LOOK_EVERY: Duration = Duration::from_millis(250);
/// Most bucket reads for one bandit at one look (a sidecar far behind catches up over
/// several looks).
const MAX_STEPS: usize = 64;

/// The prefix of every bandit key (the decision store's full read skips them).
pub const BANDIT_PREFIX: &str = "bandit.";

/// The bucket key of period `period` of bandit `experiment` (history `fingerprint`).
pub fn period_key(experiment: &str, fingerprint: &str, period: u64) -> String {
    format!("{BANDIT_PREFIX}{experiment}.{fingerprint}.{period}")
}

/// The bucket key of the open-period counters of `instance`.
pub fn open_key(experiment: &str, fingerprint: &str, instance: &str) -> String {
    format!("{BANDIT_PREFIX}{experiment}.{fingerprint}.open.{instance}")
}

/// What this task knows of one bandit.
#[derive(Default)]
struct Cursor {
    /// The state it is about (a reload that changes the bandit makes a new one); held,
    /// so that a new state can never be mistaken for it.
    state: Option<Arc<BanditState>>,
    /// Local periods known to be the fleet's.
    confirmed: u64,
    /// The counters last published.
    published: Option<OpenCounters>,
    /// The fleet's periods do not fit this state (said once): it is left alone until a
    /// reload makes a new one.
    refused: bool,
}

/// One bandit experiment as a look sees it.
struct Look {
    name: String,
    state: Arc<BanditState>,
    active: Vec<bool>,
    paused: bool,
}

/// Start sharing this sidecar's bandit periods on `conn`.
pub fn spawn(app: Arc<App>, conn: Arc<FleetConn>, mut shutdown: watch::Receiver<bool>) {
    if app.fleet.bandits.swap(true, Relaxed) {
        return;
    }
    tokio::spawn(async move {
        let instance = conn.settings.instance.clone();
        let mut kv: Option<kv::Store> = None;
        let mut cursors: HashMap<String, Cursor> = HashMap::new();
        let mut tick = tokio::time::interval(LOOK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if !conn.connected() {
                continue;
            }
            let Some(store) = bucket(&conn, &mut kv).await else {
                continue;
            };
            for look in looks(&app) {
                let cursor = cursors.entry(look.name.clone()).or_default();
                if !cursor
                    .state
                    .as_ref()
                    .is_some_and(|s| Arc::ptr_eq(s, &look.state))
                {
                    *cursor = Cursor {
                        state: Some(look.state.clone()),
                        ..Cursor::default()
                    };
                }
                if cursor.refused {
                    continue;
                }
                if sync(&app, &store, &instance, &look, cursor).await.is_err() {
                    // the broker did not answer: the next look tries again
                    break;
                }
            }
        }
    });
}

/// The bandit experiments of the current snapshot.
fn looks(app: &App) -> Vec<Look> {
    let snap = app.snapshot.load_full();
    snap.live_experiments()
        .filter_map(|e| {
            let state = e.runtime.bandit.clone()?;
            Some(Look {
                name: e.config.name.to_string(),
                active: (0..e.config.variants.len())
                    .map(|i| !e.state().variants[i].rolled_back.load(Relaxed))
                    .collect(),
                paused: e.state().paused.load(Relaxed),
                state,
            })
        })
        .collect()
}

/// The value of `key` read as `T`: `Ok(None)` when there is none (or it does not read).
async fn read<T: serde::de::DeserializeOwned>(
    kv: &kv::Store,
    key: &str,
) -> Result<Option<T>, String> {
    match bounded(kv.entry(key)).await? {
        Ok(Some(e)) if e.operation == kv::Operation::Put => {
            match serde_json::from_slice(&e.value) {
                Ok(v) => Ok(Some(v)),
                Err(err) => {
                    tracing::warn!("fleet: ignoring unreadable value of {key}: {err}");
                    Ok(None)
                }
            }
        }
        Ok(_) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Create `key` with `value`: `Ok(true)` if written, `Ok(false)` if another sidecar was
/// first.
async fn create(kv: &kv::Store, key: &str, value: &FleetPeriod) -> Result<bool, String> {
    let body = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    match bounded(kv.create(key, body.into())).await? {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

/// Bring bandit `look` and the fleet's history together (see the module doc).
async fn sync(
    app: &Arc<App>,
    kv: &kv::Store,
    instance: &str,
    look: &Look,
    cursor: &mut Cursor,
) -> Result<(), String> {
    let b = &look.state;
    let fp = b.fingerprint();
    let name = look.name.as_str();
    let mut steps = 0;
    while steps < MAX_STEPS {
        steps += 1;
        let k = cursor.confirmed;
        let local = b.periods();
        match read::<FleetPeriod>(kv, &period_key(name, &fp, k)).await? {
            Some(theirs) if k < local && b.holds(k, &theirs.period) => cursor.confirmed = k + 1,
            Some(theirs) => {
                // The fleet's history from k on replaces the local one.
                let mut entries = vec![theirs];
                while entries.len() < MAX_STEPS {
                    let next = k + entries.len() as u64;
                    match read::<FleetPeriod>(kv, &period_key(name, &fp, next)).await? {
                        Some(e) => entries.push(e),
                        None => break,
                    }
                }
                let n = entries.len() as u64;
                if !adopt(app, look, k, entries, false).await {
                    cursor.refused = true;
                    return Ok(());
                }
                cursor.confirmed = k + n;
            }
            None if k < local => {
                // Ahead of the bucket: this history's period k becomes the fleet's,
                // unless another sidecar writes it first (read again).
                let Some(mine) = b.fleet_period(k, instance) else {
                    return Ok(());
                };
                if create(kv, &period_key(name, &fp, k), &mine).await? {
                    cursor.confirmed = k + 1;
                    // A history written back goes in one look, whatever its length:
                    // stopped halfway, a sidecar that has read the first part finds the
                    // next period due (it started long ago) and would compute it over
                    // the rest of this history.
                    steps -= 1;
                }
            }
            None => {
                publish_counters(kv, instance, look, &fp, cursor).await?;
                let now = unix_ms(SystemTime::now());
                if !b.due(now) || look.paused {
                    return Ok(());
                }
                let closed = fleet_counters(app, kv, instance, look, &fp, k - 1).await?;
                let (state, active, counted) = (b.clone(), look.active.clone(), closed.clone());
                let next = tokio::task::spawn_blocking(move || {
                    state.next_period_with(now, &active, Some(&counted))
                })
                .await
                .map_err(|e| e.to_string())?;
                let mine = FleetPeriod {
                    period: next,
                    closed,
                    instance: instance.to_string(),
                };
                if create(kv, &period_key(name, &fp, k), &mine).await? {
                    // (as for the others' periods: one that does not fit this state,
                    // replaced by a reload meanwhile, leaves it to the next state)
                    if adopt(app, look, k, vec![mine], true).await {
                        cursor.confirmed = k + 1;
                    } else {
                        cursor.refused = true;
                    }
                    return Ok(());
                }
                // another sidecar computed it first: the next step reads and opens it
            }
        }
    }
    Ok(())
}

/// Publish this sidecar's counters of the open period when they changed (at most once a
/// look: every sidecar's watch of the bucket receives each put).
async fn publish_counters(
    kv: &kv::Store,
    instance: &str,
    look: &Look,
    fp: &str,
    cursor: &mut Cursor,
) -> Result<(), String> {
    let now = look.state.open_counters();
    if cursor.published.as_ref() == Some(&now) {
        return Ok(());
    }
    let body = serde_json::to_vec(&now).map_err(|e| e.to_string())?;
    bounded(kv.put(open_key(&look.name, fp, instance), body.into()))
        .await?
        .map_err(|e| e.to_string())?;
    cursor.published = Some(now);
    Ok(())
}

/// The fleet's counters of open period `period`: this sidecar's and the latest
/// published by every other sidecar seen in the bucket for that period.
async fn fleet_counters(
    app: &App,
    kv: &kv::Store,
    instance: &str,
    look: &Look,
    fp: &str,
    period: u64,
) -> Result<Vec<crate::stats::bandit::ArmStats>, String> {
    let others: Vec<String> = app
        .fleet
        .instances
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .filter(|i| i.as_str() != instance)
        .cloned()
        .collect();
    let mut theirs = Vec::new();
    for other in others {
        if let Some(c) = read::<OpenCounters>(kv, &open_key(&look.name, fp, &other)).await? {
            if c.period == period {
                theirs.push(c.stats);
            }
        }
    }
    let own = look.state.open_counters();
    Ok(merge(&own.stats, theirs.iter().map(Vec::as_slice)))
}

/// Open the fleet's periods `entries` from `first` on (off the async thread: the
/// history is fsynced), log and export; `won`: this sidecar wrote the last one.
/// Returns whether the history took them.
async fn adopt(
    app: &Arc<App>,
    look: &Look,
    first: u64,
    entries: Vec<FleetPeriod>,
    won: bool,
) -> bool {
    let Some(last) = entries.last().map(|e| e.period.clone()) else {
        return false;
    };
    let (state, app2) = (look.state.clone(), app.clone());
    let name = look.name.clone();
    let done = tokio::task::spawn_blocking(move || {
        let taken = state.splice(first, entries);
        let snap = app2.snapshot.load();
        if let Some(exp) = snap.find(&name) {
            crate::runtime::export_bandit_gauges(&app2.metrics, exp);
        }
        taken
    })
    .await;
    let rounded = |x: &[f64]| -> Vec<f64> { x.iter().map(|v| (v * 1e4).round() / 1e4).collect() };
    match done {
        Ok(Ok(true)) => {
            // (every sidecar writes the period's `bandit` record to its own log: the
            // control loop's `App::announce_bandit_period` sees the period opened)
            let how = if won {
                "computed here from the fleet's counters and written to the fleet".to_string()
            } else {
                format!("adopted from the fleet (periods {first}..={})", last.period)
            };
            tracing::info!(
                "bandit {}: period {} weights {:?} (P(best) {:?}{}) {how}",
                look.name,
                last.period,
                rounded(&last.served),
                rounded(&last.prob_best),
                if last.explore { ", exploring" } else { "" },
            );
            true
        }
        Ok(Ok(false)) => {
            tracing::warn!(
                "fleet: bandit {}: the fleet's periods from {first} do not fit this config (other arms, or not in sequence); serving the local ones without updates until a reload",
                look.name
            );
            false
        }
        Ok(Err(e)) => {
            tracing::error!("{e}; the fleet's period serves but will not survive a restart");
            true
        }
        Err(e) => {
            tracing::error!(
                "fleet: bandit {}: opening the fleet's period failed: {e}",
                look.name
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_experiment_its_fingerprint_and_the_period_or_the_instance() {
        assert_eq!(period_key("pick", "0a1b2c3d", 7), "bandit.pick.0a1b2c3d.7");
        assert_eq!(
            open_key("pick", "0a1b2c3d", "s-1"),
            "bandit.pick.0a1b2c3d.open.s-1"
        );
    }
}
