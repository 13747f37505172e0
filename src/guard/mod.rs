//! Guardrails: per experiment × variant sliding windows, the evaluator that compares
//! every treatment with its control, and the rollback state that survives restarts.
//!
//! # Design
//! - The request path only calls [`window::Window::record`] (atomics) and reads
//!   [`VariantState::served_by_control`] (one atomic load). It never waits on the evaluator.
//! - State lives here, keyed by experiment and variant *name*, not in the compiled config,
//!   so a hot reload keeps windows and rollback decisions of experiments it keeps.
//! - Decisions (`rollback`, `pause`, `resume`) are written atomically to
//!   `[state] dir/decisions.json` (temp file, fsync, rename) before they are announced; at
//!   start-up they are read back, so a rollback survives a restart and a reload. A
//!   rolled-back variant is never re-enabled automatically: only `resume` clears it.
//! - The evaluator ([`evaluator`]) runs off the request path, on its own task; its cost per
//!   check depends on the number of variants and histogram buckets, not on traffic.

pub mod evaluator;
pub mod runner;
pub mod window;

use crate::config::{Config, Experiment};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use window::Window;

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

/// A recorded decision with the numbers behind it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Decision {
    /// RFC 3339 time.
    pub ts: String,
    /// `rollback`, `alert`, `manual_rollback`, `pause`, `resume`.
    pub action: String,
    /// Guardrail that triggered it (`manual` for admin calls).
    pub guardrail: String,
    /// Control statistic.
    pub control: f64,
    /// Treatment statistic.
    pub treatment: f64,
    /// p-value, where a test was run.
    pub p_value: Option<f64>,
    /// Control requests in the window.
    pub n_control: u64,
    /// Treatment requests in the window.
    pub n_treatment: u64,
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
}

impl ExperimentState {
    /// Whether the units of variant `i` are served by control right now.
    ///
    /// Hot path: one or two atomic loads.
    #[inline]
    pub fn served_by_control(&self, i: usize) -> bool {
        self.paused.load(Relaxed) || self.variants[i].rolled_back.load(Relaxed)
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
    /// No such experiment or variant.
    #[error("{0}")]
    Unknown(String),
}

/// The registry of experiment states and the decision store.
pub struct Guard {
    registry: Mutex<HashMap<String, Arc<ExperimentState>>>,
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
        let persisted = match std::fs::read(&path) {
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
        Ok(Guard {
            registry: Mutex::new(HashMap::new()),
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
                    .zip(&exp.variants)
                    .all(|(a, b)| a.name == b.name);
            if same {
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
                    })
                })
                .collect(),
            window,
        });
        reg.insert(exp.name.to_string(), state.clone());
        state
    }

    /// Forget experiments no longer in `cfg`.
    pub fn retain(&self, cfg: &Config) {
        let mut reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        reg.retain(|name, _| cfg.experiment(name).is_some());
    }

    /// The state of an experiment by name.
    pub fn get(&self, name: &str) -> Option<Arc<ExperimentState>> {
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    fn save(&self, p: &Persisted) -> Result<(), GuardError> {
        use std::io::Write;
        let tmp = self.path.with_extension("json.tmp");
        let err = |e| GuardError::Write {
            path: self.path.clone(),
            source: e,
        };
        let body = serde_json::to_vec_pretty(p).expect("persisted state serializes");
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&body).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// Roll variant `variant` of `exp` back to control and persist the decision first.
    pub fn rollback(
        &self,
        exp: &ExperimentState,
        variant: usize,
        decision: Decision,
    ) -> Result<(), GuardError> {
        let v = &exp.variants[variant];
        {
            let mut p = self.persisted.lock().unwrap_or_else(|p| p.into_inner());
            p.experiments
                .entry(exp.name.to_string())
                .or_default()
                .rolled_back
                .insert(v.name.to_string(), decision.clone());
            self.save(&p)?;
        }
        v.rolled_back.store(true, Relaxed);
        v.set_status(GuardStatus::Fail);
        *v.last_decision.lock().unwrap_or_else(|p| p.into_inner()) = Some(decision);
        Ok(())
    }

    /// Pause (every treatment served by control) or un-pause.
    pub fn set_paused(&self, exp: &ExperimentState, paused: bool) -> Result<(), GuardError> {
        {
            let mut p = self.persisted.lock().unwrap_or_else(|p| p.into_inner());
            p.experiments
                .entry(exp.name.to_string())
                .or_default()
                .paused = paused;
            self.save(&p)?;
        }
        exp.paused.store(paused, Relaxed);
        Ok(())
    }

    /// Clear rollbacks and pause of `exp`; windows restart so old data cannot re-trigger.
    pub fn resume(&self, exp: &ExperimentState, decision: Decision) -> Result<(), GuardError> {
        {
            let mut p = self.persisted.lock().unwrap_or_else(|p| p.into_inner());
            p.experiments.remove(&*exp.name);
            self.save(&p)?;
        }
        exp.paused.store(false, Relaxed);
        for v in &exp.variants {
            v.rolled_back.store(false, Relaxed);
            v.latency_strikes.store(0, Relaxed);
            v.set_status(GuardStatus::None);
            *v.last_decision.lock().unwrap_or_else(|p| p.into_inner()) = Some(decision.clone());
        }
        // Old bad data must not re-trigger at the next check.
        for v in &exp.variants {
            v.window.reset();
        }
        Ok(())
    }
}
