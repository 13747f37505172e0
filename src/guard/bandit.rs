//! Live state of a bandit experiment: the bucket-to-arm table the request path reads,
//! the counters of the current period, and the weight history, persisted in
//! `[state] dir` as `bandit/<experiment>.json`.
//!
//! Design:
//! - **Request path.** [`BanditState::serving`] (table and period) is an `ArcSwap`: a request loads it once
//!   and reads one entry. [`BanditState::expose`] and [`BanditState::reward`] add to
//!   atomics of the current period. Nothing on the request path locks or allocates.
//! - **Periods.** Each update closes the current period (its counters become that
//!   period's [`ArmStats`]), computes the next weights from every closed period
//!   ([`BanditState::next_period`]), moves the table with the fewest moves and opens the
//!   next period ([`BanditState::open`]). Updates run in the control loop, never on the
//!   request path.
//! - **Persistence.** The history (each period's weights, `max_shift`, P(best) and
//!   statistics) is written atomically at every update. On start the table is replayed
//!   from it ([`Table::replay`]), so a restart serves the same table; the counters of the
//!   period open at a crash or restart are lost (at most one `update_interval` of data).
//!   A history whose arms differ from the config's variants is set aside and the bandit
//!   starts over.
//! - **Guardrails win.** The caller passes which arms are active: a rolled-back arm gets
//!   weight 0, its buckets go to the others by the same minimal-move rule, and nothing
//!   more is credited to it (its posterior is frozen).
//! - **Fleet.** With `[fleet]` the periods are the fleet's: [`fleet`] gives the fleet's
//!   side (a period as the bucket holds it, the merged counters of every sidecar, the
//!   history replaced from the fleet's periods); `crate::fleet::bandits` writes and reads
//!   the bucket.

use crate::assign::bandit::Table;
use crate::assign::LiveState;
use crate::config::{Bandit, Config, Experiment, MetricKind};
use crate::stats::bandit::{self as tsb, ArmStats, Posterior};
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

pub mod fleet;

/// One period of a bandit: the weights it served and, once closed, what was seen in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Period {
    /// Period number, from 0.
    pub period: u64,
    /// Unix time (ms) the period started.
    pub start_unix_ms: u64,
    /// The weights computed for this period (P(best) floored, or equal while exploring).
    pub weights: Vec<f64>,
    /// `max_shift` in force when the table moved toward `weights`.
    pub max_shift: f64,
    /// Each arm's share of the buckets during this period (the weights served).
    pub served: Vec<f64>,
    /// Each arm's probability of being best when the period started.
    pub prob_best: Vec<f64>,
    /// The weights were equal because the bandit was still exploring.
    pub explore: bool,
    /// Exposures and rewards per arm in this period (zero while it is open).
    pub stats: Vec<ArmStats>,
}

/// The persisted history of one bandit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct History {
    /// Experiment name.
    pub experiment: String,
    /// Arm (variant) names, in config order.
    pub arms: Vec<String>,
    /// Every period, in order; the last is the open one.
    pub periods: Vec<Period>,
}

/// A table and the period it serves: loaded together, so an exposure names the period
/// whose table chose its variant.
#[derive(Debug)]
pub struct Serving {
    /// The open period's number.
    pub period: u64,
    /// Its bucket-to-arm table.
    pub table: Table,
}

/// Counters of one arm in the open period.
#[derive(Default)]
struct ArmCounters {
    n: AtomicU64,
    /// f64 bits.
    sum: AtomicU64,
    /// f64 bits.
    sum_sq: AtomicU64,
}

fn add_f64(a: &AtomicU64, x: f64) {
    let _ = a.fetch_update(Relaxed, Relaxed, |b| {
        Some((f64::from_bits(b) + x).to_bits())
    });
}

/// Live state of one bandit experiment, shared across reloads that keep its arms and
/// settings.
pub struct BanditState {
    /// Experiment name.
    pub name: Arc<str>,
    /// The settings this state was made for.
    pub settings: Bandit,
    /// The table the request path reads, with the period it serves.
    pub serving: ArcSwap<Serving>,
    counters: Vec<ArmCounters>,
    history: Mutex<History>,
    path: PathBuf,
}

/// The error of writing a bandit's history.
#[derive(Debug, thiserror::Error)]
#[error("cannot write bandit history {path}: {source}")]
pub struct BanditWriteError {
    /// File.
    pub path: PathBuf,
    /// Cause.
    pub source: std::io::Error,
}

impl BanditState {
    /// The state of bandit experiment `exp` with settings `b`: restored from
    /// `dir/bandit/<name>.json` when it holds the same arms, else a fresh period 0 of
    /// equal weights starting at `now_unix_ms`.
    pub fn open_or_start(
        exp: &Experiment,
        b: &Bandit,
        dir: &Path,
        now_unix_ms: u64,
    ) -> BanditState {
        let arms: Vec<String> = exp.variants.iter().map(|v| v.name.to_string()).collect();
        let path = dir.join("bandit").join(format!("{}.json", exp.name));
        let restored = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<History>(&bytes) {
                Ok(h) if h.arms == arms && !h.periods.is_empty() => Some(h),
                Ok(_) => {
                    tracing::warn!(
                        "bandit {}: {} has other arms than the config; starting over",
                        exp.name,
                        path.display()
                    );
                    None
                }
                Err(e) => {
                    tracing::warn!(
                        "bandit {}: {} is unreadable ({e}); starting over",
                        exp.name,
                        path.display()
                    );
                    None
                }
            },
            Err(_) => None,
        };
        let history = restored.unwrap_or_else(|| {
            let weights = tsb::equal(&vec![true; arms.len()]);
            History {
                experiment: exp.name.to_string(),
                periods: vec![Period {
                    period: 0,
                    start_unix_ms: now_unix_ms,
                    served: Table::from_weights(&weights).shares(arms.len()),
                    prob_best: weights.clone(),
                    weights,
                    max_shift: b.max_shift,
                    explore: true,
                    stats: vec![ArmStats::default(); arms.len()],
                }],
                arms,
            }
        });
        let table = replay(&history);
        BanditState {
            name: exp.name.clone(),
            settings: b.clone(),
            counters: (0..history.arms.len())
                .map(|_| ArmCounters::default())
                .collect(),
            serving: ArcSwap::from_pointee(Serving {
                period: history.periods.last().map_or(0, |p| p.period),
                table,
            }),
            history: Mutex::new(history),
            path,
        }
    }

    /// Count an exposure of `arm` in the open period.
    ///
    /// Hot path: one atomic add.
    #[inline]
    pub fn expose(&self, arm: usize) {
        if let Some(c) = self.counters.get(arm) {
            c.n.fetch_add(1, Relaxed);
        }
    }

    /// Credit a reward `value` to `arm` in the open period (a binomial reward counts 1
    /// when `value > 0`).
    pub fn reward(&self, arm: usize, value: f64) {
        let Some(c) = self.counters.get(arm) else {
            return;
        };
        let x = match self.settings.kind {
            MetricKind::Binomial => f64::from(u8::from(value > 0.0)),
            MetricKind::Continuous => value,
        };
        add_f64(&c.sum, x);
        add_f64(&c.sum_sq, x * x);
    }

    /// A copy of the history, the open period's stats filled in with its counters so far.
    pub fn history(&self) -> History {
        let mut h = self.lock().clone();
        if let Some(open) = h.periods.last_mut() {
            for (s, c) in open.stats.iter_mut().zip(&self.counters) {
                s.n += c.n.load(Relaxed);
                s.sum += f64::from_bits(c.sum.load(Relaxed));
                s.sum_sq += f64::from_bits(c.sum_sq.load(Relaxed));
            }
        }
        h
    }

    /// The open period's number.
    pub fn period(&self) -> u64 {
        self.serving.load().period
    }

    /// Each arm's P(best) at the start of the open period.
    pub fn prob_best(&self) -> Vec<f64> {
        self.lock()
            .periods
            .last()
            .map_or_else(Vec::new, |p| p.prob_best.clone())
    }

    /// Exposures per arm in the open period so far.
    pub fn open_exposures(&self) -> Vec<u64> {
        self.counters.iter().map(|c| c.n.load(Relaxed)).collect()
    }

    /// Unix time (ms) the open period started.
    pub fn period_start_unix_ms(&self) -> u64 {
        self.lock().periods.last().map_or(0, |p| p.start_unix_ms)
    }

    /// Whether the open period has lasted `update_interval` at `now_unix_ms`.
    pub fn due(&self, now_unix_ms: u64) -> bool {
        now_unix_ms.saturating_sub(self.period_start_unix_ms())
            >= self.settings.update_interval.as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Close the open period: its counters become its statistics.
    pub fn close(&self) {
        let mut h = self.lock();
        if let Some(open) = h.periods.last_mut() {
            for (s, c) in open.stats.iter_mut().zip(&self.counters) {
                s.n += c.n.swap(0, Relaxed);
                s.sum += f64::from_bits(c.sum.swap(0f64.to_bits(), Relaxed));
                s.sum_sq += f64::from_bits(c.sum_sq.swap(0f64.to_bits(), Relaxed));
            }
        }
    }

    /// The next period computed from the closed ones at `now_unix_ms`, with `active[i]`
    /// false for arms rolled back: equal weights while exploring (before `explore` has
    /// passed since period 0 or while an active arm has fewer than `min_units`
    /// exposures), else each active arm's P(best) floored at `min_weight`.
    pub fn next_period(&self, now_unix_ms: u64, active: &[bool]) -> Period {
        self.next_period_with(now_unix_ms, active, None)
    }

    /// [`Self::next_period`], with the open period's statistics `open` when given (the
    /// fleet's, summed over its sidecars) instead of those recorded by [`Self::close`].
    pub fn next_period_with(
        &self,
        now_unix_ms: u64,
        active: &[bool],
        open: Option<&[ArmStats]>,
    ) -> Period {
        let h = self.lock();
        let b = &self.settings;
        let binomial = b.kind == MetricKind::Binomial;
        let mut stats: Vec<Vec<ArmStats>> = h.periods.iter().map(|p| p.stats.clone()).collect();
        if let (Some(open), Some(last)) = (open, stats.last_mut()) {
            *last = open.to_vec();
        }
        let arms = h.arms.len();
        let started = h.periods.first().map_or(now_unix_ms, |p| p.start_unix_ms);
        let number = h.periods.last().map_or(0, |p| p.period + 1);
        drop(h);
        let estimates: Vec<_> = (0..arms)
            .map(|a| tsb::estimate(&stats, a, binomial, true))
            .collect();
        // P(best) among the active arms; a rolled-back arm's is 0.
        let live: Vec<usize> = (0..arms).filter(|&a| active[a]).collect();
        let posteriors: Vec<Posterior> = live
            .iter()
            .map(|&a| Posterior::of(&estimates[a], binomial))
            .collect();
        let seed = tsb::seed(&self.name, number);
        let p_live = tsb::prob_best(&posteriors, b.higher_is_better, seed);
        let mut prob_best = vec![0.0; arms];
        for (&a, p) in live.iter().zip(p_live) {
            prob_best[a] = p;
        }
        let exploring = now_unix_ms.saturating_sub(started) < b.explore.as_millis() as u64
            || live.iter().any(|&a| estimates[a].n < b.min_units);
        let weights = if exploring {
            tsb::equal(active)
        } else {
            tsb::floored(&prob_best, active, b.min_weight)
        };
        let served = self
            .serving
            .load()
            .table
            .moved(&weights, b.max_shift)
            .shares(arms);
        Period {
            period: number,
            start_unix_ms: now_unix_ms,
            weights,
            max_shift: b.max_shift,
            served,
            prob_best,
            explore: exploring,
            stats: vec![ArmStats::default(); arms],
        }
    }

    /// Open `next` (after [`Self::close`]): move the table toward its weights, record it
    /// in the history and persist the history. The table moves even if persisting fails
    /// (the error says the history will not survive a restart).
    pub fn open(&self, next: Period) -> Result<(), BanditWriteError> {
        let table = self
            .serving
            .load()
            .table
            .moved(&next.weights, next.max_shift);
        let period = next.period;
        let body = {
            let mut h = self.lock();
            h.periods.push(next);
            serde_json::to_vec(&*h).expect("bandit history serializes")
        };
        self.serving.store(Arc::new(Serving { period, table }));
        self.save(&body)
    }

    /// Write the history `body` to its file, atomically.
    fn save(&self, body: &[u8]) -> Result<(), BanditWriteError> {
        let err = |source| BanditWriteError {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        super::state::write_atomic(&self.path, body).map_err(err)
    }
}

/// The tables a running abgate serves, as its state directory says: each bandit
/// experiment's history replayed (period 0 when it has none), read-only. `abgate assign`
/// answers with them, so it agrees with the proxy on bandit experiments.
pub struct SavedTables {
    /// `[layer][experiment]`: the serving table and period of each bandit experiment.
    tables: Vec<Vec<Option<Serving>>>,
}

impl SavedTables {
    /// Read the histories of every bandit experiment of `cfg` from `cfg.state_dir`.
    pub fn read(cfg: &Config) -> SavedTables {
        let now = super::unix_ms(std::time::SystemTime::now());
        let tables = cfg
            .layers
            .iter()
            .map(|l| {
                l.experiments
                    .iter()
                    .map(|e| {
                        let b = e.bandit.as_ref()?;
                        let s = BanditState::open_or_start(e, b, &cfg.state_dir, now);
                        let serving = s.serving.load();
                        Some(Serving {
                            period: serving.period,
                            table: serving.table.clone(),
                        })
                    })
                    .collect()
            })
            .collect();
        SavedTables { tables }
    }
}

impl LiveState for SavedTables {
    fn arm(&self, layer: usize, experiment: usize, bucket: u32) -> Option<(u16, u32)> {
        let s = self.tables.get(layer)?.get(experiment)?.as_ref()?;
        Some((s.table.arm(bucket), s.period as u32))
    }
}

/// The table of `h`: period 0's weights, then each later period's move.
fn replay(h: &History) -> Table {
    let Some((first, rest)) = h.periods.split_first() else {
        return Table::from_weights(&vec![1.0; h.arms.len()]);
    };
    let mut t = Table::from_weights(&first.weights);
    for p in rest {
        t = t.moved(&p.weights, p.max_shift);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{parse, MINIMAL};

    fn config() -> crate::config::Config {
        parse(&format!(
            "{MINIMAL}[[metric]]\nname = \"conv\"\nkind = \"binomial\"\n\
             [[layer]]\nname = \"l\"\n[[layer.experiment]]\nname = \"e\"\ntraffic = 1.0\n\
             [[layer.experiment.variant]]\nname = \"a\"\nweight = 1\n\
             [[layer.experiment.variant]]\nname = \"b\"\nweight = 1\n\
             [layer.experiment.bandit]\nreward = \"conv\"\nexplore = \"1s\"\nmin_units = 10\n\
             max_shift = 0.2\nmin_weight = 0.05\n"
        ))
        .unwrap()
    }

    #[test]
    fn updates_explore_then_follow_the_better_arm_and_a_restart_restores_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config();
        let exp = &cfg.layers[0].experiments[0];
        let b = exp.bandit.as_ref().unwrap();
        let s = BanditState::open_or_start(exp, b, dir.path(), 0);
        assert_eq!(s.serving.load().table.counts(2), [5000, 5000]);
        for _ in 0..200 {
            s.expose(0);
            s.expose(1);
        }
        for _ in 0..20 {
            s.reward(0, 1.0);
        }
        for _ in 0..60 {
            s.reward(1, 1.0);
        }
        // Still exploring at 500 ms: equal weights.
        s.close();
        let p = s.next_period(500, &[true, true]);
        assert!(p.explore);
        assert_eq!(p.weights, [0.5, 0.5]);
        s.open(p).unwrap();
        // After `explore`: arm b (30% vs 10%) takes the table, 0.2 of it per update.
        s.close();
        let p = s.next_period(2_000, &[true, true]);
        assert!(!p.explore);
        assert!(p.prob_best[1] > 0.999, "{p:?}");
        assert_eq!(p.weights, [0.05, 0.95]);
        assert_eq!(p.served, [0.3, 0.7]);
        s.open(p).unwrap();
        assert_eq!(s.period(), 2);
        let again = BanditState::open_or_start(exp, b, dir.path(), 9_999);
        assert_eq!(again.serving.load().table, s.serving.load().table);
        assert_eq!(again.period(), 2);
        assert_eq!(again.history().periods, s.history().periods);
        // A rolled-back arm gets weight 0 and its P(best) is 0.
        s.close();
        let p = s.next_period(3_000, &[true, false]);
        assert_eq!(
            (p.weights.clone(), p.prob_best.clone()),
            (vec![1.0, 0.0], vec![1.0, 0.0])
        );
        assert_eq!(p.served, [0.5, 0.5]);
    }
}
