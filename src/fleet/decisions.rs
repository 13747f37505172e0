//! The fleet's decision store: every rollback, pause and resume taken on any sidecar
//! reaches every sidecar, through a JetStream key-value bucket (`[fleet] bucket`).
//!
//! # Guarantees
//! - **Shared within 2 s.** A decision taken here ([`crate::runtime::App::decide`]:
//!   guardrail or admin API) is applied here at once, then written to the bucket; every
//!   connected sidecar watches the bucket and applies it through the same guard store,
//!   without a second `guardrail` event (the taker wrote it). A full re-read every 5 s
//!   covers a watch that died silently (nats-io/nats.rs#1596: a KV watch may not resume
//!   after a server restart); the watch is also re-made after every reconnect.
//! - **One decision per generation.** Key `decision.<experiment>.<variant>` holds the
//!   variant's latest decision and its generation ([`plan`]). Generation 1 is written by
//!   KV `create`, each later one by a compare-and-set on the revision of the one before,
//!   so concurrent writers of the same generation have one winner; a loser whose
//!   decision says the same (a second rollback) adopts the winner's and writes no event,
//!   so concurrent rollbacks leave one decision in the bucket and one `guardrail` event
//!   in the fleet. A resume after a rollback, and a rollback after a resume, take the
//!   next generation.
//! - **Cut off, a sidecar keeps deciding.** Its guardrails and admin API work as alone;
//!   what it decides is announced at once (event, log, metric) and kept as pending in
//!   `fleet.json`, then published when the broker returns, by the same rule: a same
//!   stance adopts the fleet's value, a different one is written as the next generation
//!   unless the fleet's value was decided later (a resume issued meanwhile wins over an
//!   older rollback).
//! - **Restarts.** Applied decisions are in the guard store (`decisions.json`), so a
//!   sidecar restarted while the broker is down honours the fleet's last known
//!   decisions; `fleet.json` keeps the revisions already applied and the pending ones.
//!
//! Every sidecar also writes `instance.<name>` with the time every 2 s (the instances
//! seen, `abgate_fleet_instances`). Nothing here is on the request path; every broker
//! operation is bounded by a timeout.

pub(super) mod bucket;
mod heartbeat;
mod persist;
pub mod plan;
mod stance;

use crate::fleet::{windows, FleetConn};
use crate::guard::Decision;
use crate::runtime::{unix_ms, App};
use async_nats::jetstream::kv;
use bucket::{bounded, read};
use futures_util::{StreamExt, TryStreamExt};
use persist::{FleetFile, Pending};
use plan::{decision_key, is_news, plan, Current, FleetDecision, Plan};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};

/// Longest wait to share one local decision before announcing it as taken alone.
const SHARE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the store looks at the connection, pending decisions and its timers.
const TICK: Duration = Duration::from_millis(200);
/// How often this sidecar writes its heartbeat.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// How often the whole bucket is read again.
const FULL_READ_EVERY: Duration = Duration::from_secs(5);
/// Heartbeats failing in a row before the connection is made again.
const SILENT_HEARTBEATS: u32 = 3;
/// Attempts to write one decision while other writers keep moving the key.
const PUBLISH_ATTEMPTS: usize = 5;

/// Start the decision store of this sidecar on `conn`: from now on [`App::decide`]
/// hands it every decision to share.
pub fn spawn(app: Arc<App>, conn: Arc<FleetConn>, shutdown: watch::Receiver<bool>) {
    let (tx, rx) = mpsc::unbounded_channel();
    if app.fleet_decisions.set(tx).is_err() {
        tracing::error!("fleet: the decision store is already running");
        return;
    }
    let path = persist::path_in(&app.snapshot.load().config.state_dir);
    let store = Store {
        instance: conn.settings.instance.clone(),
        file: persist::load(&path),
        path,
        app,
        conn,
        kv: None,
        last_heartbeat: None,
        last_full_read: None,
        watch_retry_at: Instant::now(),
        watch_failures: 0,
        connects_seen: 0,
        ever_connected: false,
        started: Instant::now(),
        bucket_retry_at: Instant::now(),
        bucket_warned: false,
        windows: Default::default(),
        heartbeat_failures: 0,
    };
    tokio::spawn(store.run(rx, shutdown));
}

struct Store {
    app: Arc<App>,
    conn: Arc<FleetConn>,
    instance: String,
    path: PathBuf,
    file: FleetFile,
    kv: Option<kv::Store>,
    last_heartbeat: Option<Instant>,
    last_full_read: Option<Instant>,
    watch_retry_at: Instant,
    watch_failures: u32,
    /// `FleetStatus::connects` when the watch was last made.
    connects_seen: u64,
    ever_connected: bool,
    started: Instant,
    bucket_retry_at: Instant,
    bucket_warned: bool,
    windows: crate::fleet::windows::Publisher,
    heartbeat_failures: u32,
}

enum Ev {
    Local(Decision),
    Watched(Option<Result<kv::Entry, kv::WatcherError>>),
    Tick,
}

type Watching = Option<kv::Watch>;

async fn next_entry(w: &mut Watching) -> Option<Result<kv::Entry, kv::WatcherError>> {
    match w {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

impl Store {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Decision>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        self.reconcile_at_start().await;
        let mut watch: Watching = None;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let ev = tokio::select! {
                d = rx.recv() => match d {
                    Some(d) => Ev::Local(d),
                    None => return,
                },
                e = next_entry(&mut watch) => Ev::Watched(e),
                _ = tick.tick() => Ev::Tick,
                _ = shutdown.changed() => return,
            };
            match ev {
                Ev::Local(d) => self.local(d).await,
                Ev::Watched(Some(Ok(entry))) => {
                    self.touch();
                    self.on_entry(entry).await;
                }
                Ev::Watched(end) => {
                    let why = match end {
                        Some(Err(e)) => e.to_string(),
                        _ => "the watch ended".into(),
                    };
                    tracing::warn!("fleet: decision watch lost ({why}); making a new one");
                    watch = None;
                    self.watch_failed();
                }
                Ev::Tick => self.tick(&mut watch).await,
            }
        }
    }

    /// A decision taken here: share it, then announce it if the fleet keeps ours.
    async fn local(&mut self, d: Decision) {
        let key = decision_key(&d.experiment, &d.variant);
        self.file.pending.insert(
            key.clone(),
            Pending {
                decision: d,
                announced: false,
            },
        );
        let why = if self.conn.connected() && self.kv.is_some() {
            match tokio::time::timeout(SHARE_TIMEOUT, self.publish(&key)).await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e,
                Err(_) => "timed out".into(),
            }
        } else {
            "not connected to the broker".into()
        };
        // Not shared now: it was taken here, so it is announced here, and published
        // when the broker is back.
        if let Some(p) = self.file.pending.get_mut(&key) {
            if !p.announced {
                p.announced = true;
                self.app.announce(&p.decision);
            }
            tracing::warn!(
                "fleet: cannot share {} of experiment {} variant {} now ({why}); it holds here and is published when the broker is back",
                p.decision.action.as_str(),
                p.decision.experiment,
                p.decision.variant
            );
        }
        self.save().await;
    }

    /// Write the pending decision of `key` by the generation rule ([`plan`]).
    async fn publish(&mut self, key: &str) -> Result<(), String> {
        let kv = self.kv.clone().ok_or("no bucket yet")?;
        for _ in 0..PUBLISH_ATTEMPTS {
            let Some(p) = self.file.pending.get(key).cloned() else {
                return Ok(());
            };
            let current = read(&kv, key).await?;
            let (generation, write) = match plan(current.as_ref(), &p.decision) {
                Plan::Adopt => {
                    if let Some(c) = current {
                        self.adopt(key, c).await;
                    }
                    return Ok(());
                }
                Plan::Create => (1, None),
                Plan::Update {
                    revision,
                    generation,
                } => {
                    // The fleet moved on while this decision waited (a resume issued
                    // while this sidecar was cut off): follow it first, so what is
                    // written next lands on the fleet's state, not on a stale one.
                    if let Some(c) = current.filter(|c| {
                        is_news(self.file.known.get(key), c.revision)
                            && c.value.instance != self.instance
                    }) {
                        self.file.known.insert(key.to_string(), c.clone());
                        self.apply(&c.value).await;
                    }
                    (generation, Some(revision))
                }
            };
            let value = FleetDecision {
                generation,
                instance: self.instance.clone(),
                decision: p.decision.clone(),
            };
            let body = serde_json::to_vec(&value)
                .map_err(|e| e.to_string())?
                .into();
            let written = match write {
                None => bounded(kv.create(key, body)).await?.map_err(|e| {
                    (
                        e.kind() == kv::CreateErrorKind::AlreadyExists,
                        e.to_string(),
                    )
                }),
                Some(rev) => bounded(kv.update(key, body, rev)).await?.map_err(|e| {
                    (
                        e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                        e.to_string(),
                    )
                }),
            };
            match written {
                Ok(revision) => {
                    self.won(key, Current { revision, value }).await;
                    return Ok(());
                }
                // Another writer was first: read again and decide again.
                Err((true, _)) => continue,
                Err((false, e)) => return Err(e),
            }
        }
        Err("the key kept changing under other writers".into())
    }

    /// Our decision is the fleet's, as `current`.
    async fn won(&mut self, key: &str, current: Current) {
        let v = &current.value;
        tracing::info!(
            "fleet: experiment {} variant {}: {} shared as generation {}",
            v.decision.experiment,
            v.decision.variant,
            v.decision.action.as_str(),
            v.generation
        );
        if let Some(p) = self.file.pending.remove(key) {
            if !p.announced {
                self.app.announce(&p.decision);
            } else if self.differs_here(&p.decision) {
                // Taken here earlier, then a decision of the fleet applied over it: ours
                // is the latest again, so it holds here again (no second event).
                self.apply(&current.value).await;
            }
        }
        self.file.known.insert(key.to_string(), current);
        self.save().await;
    }

    /// The fleet keeps `current` instead of our pending decision: apply it.
    async fn adopt(&mut self, key: &str, current: Current) {
        self.file.pending.remove(key);
        self.file.known.insert(key.to_string(), current.clone());
        self.apply(&current.value).await;
        self.save().await;
    }

    /// A value read from the bucket (watch or full read).
    async fn on_entry(&mut self, e: kv::Entry) {
        if e.key.starts_with(windows::WINDOW_PREFIX) {
            windows::received(&self.app, &self.instance, &e);
            return;
        }
        if let Some(name) = e.key.strip_prefix(plan::INSTANCE_PREFIX) {
            self.heard_from(name, &e);
            return;
        }
        if !e.key.starts_with(plan::DECISION_PREFIX) || e.operation != kv::Operation::Put {
            return;
        }
        let value: FleetDecision = match serde_json::from_slice(&e.value) {
            Ok(v) => v,
            Err(err) => {
                tracing::warn!("fleet: ignoring unreadable value of {}: {err}", e.key);
                return;
            }
        };
        let current = Current {
            revision: e.revision,
            value,
        };
        if let Some(p) = self.file.pending.get(&e.key) {
            if plan(Some(&current), &p.decision) == Plan::Adopt {
                self.adopt(&e.key, current).await;
            } else if let Err(why) = self.publish(&e.key).await {
                tracing::warn!("fleet: cannot publish {}: {why}", e.key);
            }
            return;
        }
        if !is_news(self.file.known.get(&e.key), current.revision) {
            return;
        }
        self.file.known.insert(e.key.clone(), current.clone());
        if current.value.instance != self.instance {
            self.apply(&current.value).await;
        }
        self.save().await;
    }

    /// Apply a decision the fleet holds, off the async threads (the guard store fsyncs).
    async fn apply(&self, v: &FleetDecision) {
        let (app, d, from) = (self.app.clone(), v.decision.clone(), v.instance.clone());
        let done = tokio::task::spawn_blocking(move || app.apply_remote(&d, &from)).await;
        match done {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => tracing::info!(
                "fleet: decision about experiment {} variant {} not applied: not in this config",
                v.decision.experiment,
                v.decision.variant
            ),
            Ok(Err(e)) => tracing::error!("fleet: {e}"),
            Err(e) => tracing::error!("fleet: applying a decision failed: {e}"),
        }
    }

    async fn tick(&mut self, watch: &mut Watching) {
        self.app
            .fleet
            .connected
            .store(self.conn.connected(), Relaxed);
        if !self.conn.connected() {
            if !self.ever_connected && self.started.elapsed() >= Duration::from_secs(3) {
                self.ever_connected = true; // warn once
                tracing::warn!(
                    "fleet: broker {} not reachable yet; serving with local decisions while retrying",
                    self.conn.settings.nats_urls.join(",")
                );
            }
            return;
        }
        self.ever_connected = true;
        let Some(kv) = self.bucket().await else {
            return;
        };
        // After a reconnect the old watch may be dead without saying so.
        let connects = self.app.fleet.connects.load(Relaxed);
        if connects != self.connects_seen && watch.is_some() {
            *watch = None;
        }
        if watch.is_none() && Instant::now() >= self.watch_retry_at {
            match bounded(kv.watch_all()).await {
                Ok(Ok(w)) => {
                    *watch = Some(w);
                    self.connects_seen = connects;
                    self.watch_failures = 0;
                }
                Ok(Err(e)) => {
                    tracing::warn!("fleet: cannot watch the decisions: {e}");
                    self.watch_failed();
                }
                Err(e) => {
                    tracing::warn!("fleet: cannot watch the decisions: {e}");
                    self.watch_failed();
                }
            }
        }
        self.publish_pending().await;
        if windows::sharing(&self.app) {
            self.windows.publish(&self.app, &self.instance, &kv).await;
        }
        if due(self.last_heartbeat, HEARTBEAT_EVERY) {
            self.heartbeat(&kv).await;
        }
        if due(self.last_full_read, FULL_READ_EVERY) && self.full_read(&kv).await {
            // The full read found what the watch should have brought: make a new one.
            *watch = None;
        }
    }

    /// Publish what was decided while cut off (oldest first).
    async fn publish_pending(&mut self) {
        let mut keys: Vec<(SystemTime, String)> = self
            .file
            .pending
            .iter()
            .map(|(k, p)| (p.decision.ts, k.clone()))
            .collect();
        keys.sort();
        for (_, key) in keys {
            if let Err(why) = self.publish(&key).await {
                tracing::warn!("fleet: cannot publish {key} yet: {why}");
                return;
            }
        }
    }

    /// Read every key again; returns whether a decision was news (the watch missed it).
    async fn full_read(&mut self, kv: &kv::Store) -> bool {
        self.last_full_read = Some(Instant::now());
        let keys = bounded(async {
            let keys = kv.keys().await.map_err(|e| e.to_string())?;
            keys.try_collect::<Vec<String>>()
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        let keys: Vec<String> = match keys {
            Ok(Ok(k)) => k,
            Ok(Err(e)) => return self.read_failed(&e),
            Err(e) => return self.read_failed(&e),
        };
        let mut news = false;
        let now = unix_ms(SystemTime::now());
        for key in keys {
            if key.starts_with(crate::fleet::bandits::BANDIT_PREFIX) {
                continue; // the bandit task reads its own keys (one per period: many)
            }
            let entry = match bounded(kv.entry(key.as_str())).await {
                Ok(Ok(Some(e))) => e,
                Ok(Ok(None)) => continue,
                Ok(Err(e)) => return self.read_failed(&e),
                Err(e) => return self.read_failed(&e),
            };
            let per_instance =
                key.starts_with(windows::WINDOW_PREFIX) || key.starts_with(plan::INSTANCE_PREFIX);
            if per_instance && windows::is_gone(&entry, now) {
                // A sidecar gone for an hour: its keys go (whoever reads them first).
                let _ = bounded(kv.delete(key.as_str())).await;
                continue;
            }
            if entry.key.starts_with(plan::DECISION_PREFIX)
                && is_news(self.file.known.get(&entry.key), entry.revision)
                && !self.file.pending.contains_key(&entry.key)
            {
                news = true;
            }
            self.on_entry(entry).await;
        }
        self.touch();
        news
    }

    fn read_failed(&self, e: &dyn std::fmt::Display) -> bool {
        tracing::warn!("fleet: cannot read the decision bucket: {e}");
        false
    }

    /// The bucket, created if missing ([`create_bucket`]).
    async fn bucket(&mut self) -> Option<kv::Store> {
        if let Some(kv) = &self.kv {
            return Some(kv.clone());
        }
        if Instant::now() < self.bucket_retry_at {
            return None;
        }
        match bucket::open_or_create(&self.conn).await {
            Ok(s) => {
                self.kv = Some(s.clone());
                self.bucket_warned = false;
                Some(s)
            }
            Err(e) => {
                self.bucket_retry_at = Instant::now() + Duration::from_secs(1);
                if !self.bucket_warned {
                    self.bucket_warned = true;
                    tracing::warn!(
                        "fleet: cannot open or create bucket {}: {e}; retrying every second",
                        self.conn.settings.bucket
                    );
                }
                None
            }
        }
    }

    fn touch(&self) {
        self.app
            .fleet
            .state_updated_unix_ms
            .store(unix_ms(SystemTime::now()), Relaxed);
    }

    fn watch_failed(&mut self) {
        // Re-made with a growing pause: each new watch is a consumer on the server.
        self.watch_failures = (self.watch_failures + 1).min(6);
        self.watch_retry_at =
            Instant::now() + Duration::from_millis(250 << self.watch_failures.min(5));
    }

    async fn save(&self) {
        let body = match serde_json::to_vec_pretty(&self.file) {
            Ok(b) => b,
            Err(e) => return tracing::error!("fleet: cannot encode the fleet state: {e}"),
        };
        let path = self.path.clone();
        match tokio::task::spawn_blocking(move || persist::save(&path, &body)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(
                "fleet: cannot write {}: {e}; decisions hold in memory",
                self.path.display()
            ),
            Err(e) => tracing::error!("fleet: writing the fleet state failed: {e}"),
        }
    }
}

fn due(last: Option<Instant>, every: Duration) -> bool {
    last.is_none_or(|t| t.elapsed() >= every)
}
