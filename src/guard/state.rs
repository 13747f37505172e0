//! Live guard state: per experiment × variant windows, rollback flags and guardrail
//! status, and the decision store in `[state] dir` that makes decisions survive restarts.
//!
//! State is keyed by experiment and variant *name*, not by position in a compiled config,
//! so a hot reload keeps the windows and decisions of the experiments it keeps.

use super::bandit::BanditState;
use super::decision::{Action, Decision};
use super::window::{self, Window};
use crate::config::{Config, Experiment};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Guardrail status of a variant, as shown by the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardStatus {
    /// No guardrails configured, or the variant is the control.
    None,
    /// Fewer than `min_requests` in the window.
    InsufficientData,
    /// Checked and within bounds.
    Pass,
    /// Violated (rolled back or alerted).
    Fail,
}

impl GuardStatus {
    fn from_u8(v: u8) -> GuardStatus {
        match v {
            1 => GuardStatus::InsufficientData,
            2 => GuardStatus::Pass,
            3 => GuardStatus::Fail,
            _ => GuardStatus::None,
        }
    }
}

/// Live state of one variant.
pub struct VariantState {
    /// Variant name.
    pub name: Arc<str>,
    /// Served by control (rolled back).
    pub rolled_back: AtomicBool,
    /// Sliding window.
    pub window: Window,
    status: AtomicU8,
    /// Consecutive failing latency checks.
    pub latency_strikes: AtomicU32,
    /// Distinct units assigned to this variant since start (approximate).
    pub units: window::DistinctUnits,
    /// Last decision about this variant.
    pub last_decision: Mutex<Option<Decision>>,
    /// Counts since start, for the gate of a ramp (only an experiment with a ramp).
    pub totals: Option<super::ramp::totals::Totals>,
}

impl VariantState {
    /// Current guardrail status.
    pub fn status(&self) -> GuardStatus {
        GuardStatus::from_u8(self.status.load(Relaxed))
    }
    /// Set the guardrail status.
    pub fn set_status(&self, s: GuardStatus) {
        self.status.store(s as u8, Relaxed);
    }
}

/// Live state of one experiment.
pub struct ExperimentState {
    /// Experiment name.
    pub name: Arc<str>,
    /// Every treatment served by control.
    pub paused: AtomicBool,
    /// Variants, in config order.
    pub variants: Vec<Arc<VariantState>>,
    window: Duration,
    /// Unix time (ms) the windows' data starts: when this state was made, then the
    /// time of each resume applied (a fleet shares it: [`Self::window_since_unix_ms`]).
    created_unix_ms: u64,
    /// Unix time (ms) of the last resume applied here (its decision's `ts`, the same on
    /// every sidecar that applied it); 0 = none since start.
    pub resumed_unix_ms: AtomicU64,
    /// Buckets of the experiment's range served now: its ramp's current step, or
    /// `u32::MAX` (the whole range) without a ramp.
    pub ramp_buckets: AtomicU32,
}

impl ExperimentState {
    /// Unix time (ms) from which this sidecar's windows hold data: the later of when
    /// the state was made and the last resume. A fleet evaluator sums another
    /// sidecar's window only if it starts at or after the last resume it knows
    /// (`share_windows`), so data from before a resume never re-triggers a rollback.
    pub fn window_since_unix_ms(&self) -> u64 {
        self.created_unix_ms.max(self.resumed_unix_ms.load(Relaxed))
    }

    /// Whether the units of variant `i` are served by control right now.
    ///
    /// Hot path: one or two atomic loads.
    #[inline]
    pub fn served_by_control(&self, i: usize) -> bool {
        self.paused.load(Relaxed) || self.variants[i].rolled_back.load(Relaxed)
    }

    /// Whether a unit in layer bucket `bucket` of the experiment's range starting at
    /// `start` is inside the part its ramp serves now.
    ///
    /// Hot path: one atomic load.
    #[inline]
    pub fn ramp_serves(&self, start: u32, bucket: u32) -> bool {
        super::ramp::store::in_served_part(start, self.ramp_buckets.load(Relaxed), bucket)
    }

    /// `running`, `rolled_back` or `paused`.
    pub fn state_word(&self) -> &'static str {
        if self.paused.load(Relaxed) {
            "paused"
        } else if self.variants.iter().any(|v| v.rolled_back.load(Relaxed)) {
            "rolled_back"
        } else {
            "running"
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    experiments: HashMap<String, PersistedExperiment>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct PersistedExperiment {
    paused: bool,
    rolled_back: HashMap<String, Decision>,
}

/// Errors of the guard state store.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The state directory or file could not be written.
    #[error("cannot write guard state to {path}: {source}")]
    Write {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The state file exists but is not readable JSON.
    #[error("guard state file {path} is corrupt ({why}); move it away to start with no rollbacks")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// Cause.
        why: String,
    },
}

/// The registry of experiment states and the decision store.
pub struct Guard {
    /// The ramps' states (`ramps.json` beside the decisions).
    pub ramps: super::ramp::RampStore,
    registry: Mutex<HashMap<String, Arc<ExperimentState>>>,
    bandits: Mutex<HashMap<String, Arc<BanditState>>>,
    persisted: Mutex<Persisted>,
    path: PathBuf,
}

impl Guard {
    /// Open the store in `dir`, reading earlier decisions.
    pub fn open(dir: &std::path::Path) -> Result<Guard, GuardError> {
        std::fs::create_dir_all(dir).map_err(|e| GuardError::Write {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let path = dir.join("decisions.json");
        let mut persisted: Persisted = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| GuardError::Corrupt {
                path: path.clone(),
                why: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
            Err(e) => {
                return Err(GuardError::Corrupt {
                    path,
                    why: e.to_string(),
                })
            }
        };
        // Files written before decisions named their experiment and variant.
        for (exp, pe) in &mut persisted.experiments {
            for (variant, d) in &mut pe.rolled_back {
                if d.experiment.is_empty() {
                    d.experiment = Arc::from(exp.as_str());
                    d.variant = Arc::from(variant.as_str());
                }
            }
        }
        Ok(Guard {
            ramps: super::ramp::RampStore::open(dir)?,
            registry: Mutex::new(HashMap::new()),
            bandits: Mutex::new(HashMap::new()),
            persisted: Mutex::new(persisted),
            path,
        })
    }

    /// The state of `exp`, reusing the existing one when the experiment kept its
    /// variants and window (a reload), else a fresh one carrying persisted decisions.
    pub fn experiment_state(&self, exp: &Experiment) -> Arc<ExperimentState> {
        let window = exp
            .guardrails
            .as_ref()
            .map(|g| g.window)
            .unwrap_or(Duration::from_secs(300));
        let mut reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = reg.get(&*exp.name) {
            let same = s.window == window
                && s.variants.len() == exp.variants.len()
                && s.variants
                    .iter()
                    .all(|v| v.totals.is_some() == exp.ramp.is_some())
                && s.variants
                    .iter()
                    .zip(&exp.variants)
                    .all(|(a, b)| a.name == b.name);
            if same {
                s.ramp_buckets.store(self.ramp_buckets(exp), Relaxed);
                return s.clone();
            }
        }
        let persisted = self.persisted.lock().unwrap_or_else(|p| p.into_inner());
        let pe = persisted.experiments.get(&*exp.name);
        let state = Arc::new(ExperimentState {
            name: exp.name.clone(),
            paused: AtomicBool::new(pe.is_some_and(|p| p.paused)),
            variants: exp
                .variants
                .iter()
                .map(|v| {
                    let decision = pe.and_then(|p| p.rolled_back.get(&*v.name)).cloned();
                    Arc::new(VariantState {
                        name: v.name.clone(),
                        rolled_back: AtomicBool::new(decision.is_some()),
                        window: Window::new(window.as_millis() as u64),
                        status: AtomicU8::new(if decision.is_some() {
                            GuardStatus::Fail as u8
                        } else {
                            0
                        }),
                        latency_strikes: AtomicU32::new(0),
                        units: window::DistinctUnits::default(),
                        last_decision: Mutex::new(decision),
                        totals: exp.ramp.as_ref().map(|_| Default::default()),
                    })
                })
                .collect(),
            window,
            created_unix_ms: unix_ms(std::time::SystemTime::now()),
            resumed_unix_ms: AtomicU64::new(0),
            ramp_buckets: AtomicU32::new(self.ramp_buckets(exp)),
        });
        reg.insert(exp.name.to_string(), state.clone());
        state
    }

    /// The buckets `exp` serves now: its ramp's traffic (started, or re-planned after a
    /// reload, here), or all of them.
    fn ramp_buckets(&self, exp: &Experiment) -> u32 {
        match self.ramps.ensure(exp, std::time::SystemTime::now()) {
            Some(r) => super::ramp::store::served_buckets(exp, r.traffic),
            None => u32::MAX,
        }
    }

    /// Forget experiments no longer in `cfg`.
    pub fn retain(&self, cfg: &Config) {
        let mut reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        reg.retain(|name, _| cfg.experiment(name).is_some());
        drop(reg);
        self.ramps.retain(|name| cfg.experiment(name).is_some());
        let mut bandits = self.bandits.lock().unwrap_or_else(|p| p.into_inner());
        bandits.retain(|name, _| cfg.experiment(name).is_some());
    }

    fn save(&self, p: &Persisted) -> Result<(), GuardError> {
        let body = serde_json::to_vec_pretty(p).expect("persisted state serializes");
        write_atomic(&self.path, &body).map_err(|e| GuardError::Write {
            path: self.path.clone(),
            source: e,
        })
    }

    /// The live state of bandit experiment `exp`, reusing the existing one when the
    /// experiment kept its arms and bandit settings (a reload), else restored from (or
    /// started in) the state directory. `None` for an experiment without a bandit.
    pub fn bandit_state(&self, exp: &Experiment) -> Option<Arc<BanditState>> {
        let b = exp.bandit.as_ref()?;
        let mut reg = self.bandits.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = reg.get(&*exp.name) {
            let arms = s.history().arms;
            let same = s.settings == *b
                && arms.len() == exp.variants.len()
                && arms.iter().zip(&exp.variants).all(|(a, v)| **a == *v.name);
            if same {
                return Some(s.clone());
            }
        }
        let now = unix_ms(std::time::SystemTime::now());
        let dir = self.path.parent().unwrap_or(std::path::Path::new("."));
        let state = Arc::new(BanditState::open_or_start(exp, b, dir, now));
        reg.insert(exp.name.to_string(), state.clone());
        Some(state)
    }

    /// Apply `decision` about variant `variant` of `exp`: persist it first (a rollback
    /// or pause must survive a restart), then change the live state. An alert changes
    /// nothing but the variant's last decision. If persisting fails, a rollback is still
    /// applied in memory (serving control is the safe side) and the error is returned.
    pub fn apply(
        &self,
        exp: &ExperimentState,
        variant: usize,
        decision: &Decision,
    ) -> Result<(), GuardError> {
        let v = &exp.variants[variant];
        let saved = match decision.action {
            Action::Alert => Ok(()),
            Action::Rollback | Action::ManualRollback => self.persist(|p| {
                p.experiments
                    .entry(exp.name.to_string())
                    .or_default()
                    .rolled_back
                    .insert(v.name.to_string(), decision.clone());
            }),
            Action::Pause => self.persist(|p| {
                p.experiments
                    .entry(exp.name.to_string())
                    .or_default()
                    .paused = true;
            }),
            Action::Resume => self.persist(|p| {
                p.experiments.remove(&*exp.name);
            }),
        };
        if saved.is_err() && !decision.action.rolls_back() {
            return saved;
        }
        match decision.action {
            Action::Alert => v.set_status(GuardStatus::Fail),
            Action::Rollback | Action::ManualRollback => {
                v.rolled_back.store(true, Relaxed);
                v.set_status(GuardStatus::Fail);
            }
            Action::Pause => exp.paused.store(true, Relaxed),
            Action::Resume => {
                exp.paused.store(false, Relaxed);
                exp.resumed_unix_ms.store(unix_ms(decision.ts), Relaxed);
                for v in &exp.variants {
                    v.rolled_back.store(false, Relaxed);
                    v.latency_strikes.store(0, Relaxed);
                    v.set_status(GuardStatus::None);
                    // Old bad data must not re-trigger at the next check.
                    v.window.reset();
                }
            }
        }
        *v.last_decision.lock().unwrap_or_else(|p| p.into_inner()) = Some(decision.clone());
        saved
    }

    /// Change the persisted state with `edit` and write it atomically.
    fn persist(&self, edit: impl FnOnce(&mut Persisted)) -> Result<(), GuardError> {
        let mut p = self.persisted.lock().unwrap_or_else(|p| p.into_inner());
        edit(&mut p);
        self.save(&p)
    }
}

/// Write `body` to `path` atomically: a temporary file beside it, fsync, rename, fsync
/// of the directory. A crash leaves the old content or the new one.
pub fn write_atomic(path: &std::path::Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Milliseconds since the unix epoch at `t` (0 before it).
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
