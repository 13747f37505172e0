//! The ramp store: every ramp's [`RampState`] in `[state] dir`/`ramps.json`, written
//! atomically (temporary file, fsync, rename) after each transition, so a restart
//! resumes the same step with the same timer.
//!
//! Transitions made while building a snapshot (a ramp's start, a reload's replan) are
//! queued here and announced by the runtime (event, log) at its next look.

use super::state::{RampState, Transition};
use crate::config::Experiment;
use crate::guard::state::write_atomic;
use crate::guard::GuardError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// Every ramp's state, persisted.
pub struct RampStore {
    path: PathBuf,
    states: Mutex<BTreeMap<String, RampState>>,
    pending: Mutex<Vec<Transition>>,
}

impl RampStore {
    /// Open the store in `dir`, reading the states written before.
    pub fn open(dir: &Path) -> Result<RampStore, GuardError> {
        let path = dir.join("ramps.json");
        let states = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| GuardError::Corrupt {
                path: path.clone(),
                why: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(GuardError::Corrupt {
                    path,
                    why: e.to_string(),
                })
            }
        };
        Ok(RampStore {
            path,
            states: Mutex::new(states),
            pending: Mutex::new(Vec::new()),
        })
    }

    /// The state of ramp `name`, if it has begun.
    pub fn get(&self, name: &str) -> Option<RampState> {
        self.lock().get(name).cloned()
    }

    /// The state of the ramp of `exp` at `now`: the persisted one, re-planned if the
    /// config changed its steps, or a new one at its first step. A transition this makes
    /// is persisted and queued ([`Self::take_pending`]).
    pub fn ensure(&self, exp: &Experiment, now: SystemTime) -> Option<RampState> {
        let ramp = exp.ramp.as_ref()?;
        let mut states = self.lock();
        let made = match states.get_mut(&*exp.name) {
            Some(s) => s.replan(&exp.name, ramp, now),
            None => {
                let (s, t) = RampState::start(&exp.name, ramp, now);
                states.insert(exp.name.to_string(), s);
                Some(t)
            }
        };
        let state = states.get(&*exp.name).cloned();
        if let Some(t) = made {
            if let Err(e) = self.save(&states) {
                tracing::error!(
                    "{e}; the ramp of {} will restart from its saved step",
                    exp.name
                );
            }
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(t);
        }
        state
    }

    /// Change the state of ramp `name` with `f`; a transition it returns is persisted
    /// before this returns. `None` from `f`, or no such ramp, changes nothing.
    pub fn update(
        &self,
        name: &str,
        f: impl FnOnce(&mut RampState) -> Option<Transition>,
    ) -> Result<Option<(RampState, Transition)>, GuardError> {
        let mut states = self.lock();
        let Some(s) = states.get_mut(name) else {
            return Ok(None);
        };
        let mut next = s.clone();
        let Some(t) = f(&mut next) else {
            return Ok(None);
        };
        *s = next.clone();
        // Like a rollback, a transition holds in memory if it cannot be persisted.
        self.save(&states).map(|()| Some((next, t)))
    }

    /// Replace the state of ramp `name` (adopted from the fleet); persisted.
    pub fn replace(&self, name: &str, state: RampState) -> Result<(), GuardError> {
        let mut states = self.lock();
        states.insert(name.to_string(), state);
        self.save(&states)
    }

    /// Transitions made while building snapshots, not yet announced.
    pub fn take_pending(&self) -> Vec<Transition> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Forget ramps whose experiment is no longer configured with one.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut states = self.lock();
        let before = states.len();
        states.retain(|name, _| keep(name));
        if states.len() != before {
            if let Err(e) = self.save(&states) {
                tracing::warn!("{e}");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, RampState>> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, states: &BTreeMap<String, RampState>) -> Result<(), GuardError> {
        let body = serde_json::to_vec_pretty(states).expect("ramp states serialize");
        write_atomic(&self.path, &body).map_err(|e| GuardError::Write {
            path: self.path.clone(),
            source: e,
        })
    }
}

/// The buckets of its layer a ramp at `traffic` serves (the request path compares the
/// bucket's offset in the experiment's range with it).
pub fn buckets(traffic: f64) -> u32 {
    (traffic * crate::hash::BUCKETS as f64).round() as u32
}

/// The buckets of its range experiment `exp` serves with its ramp at `traffic`.
pub fn served_buckets(exp: &crate::config::Experiment, traffic: f64) -> u32 {
    buckets(traffic).min(exp.end - exp.start)
}

/// Whether layer bucket `bucket` is in the part of a range starting at `start` that
/// serves `served` buckets ([`served_buckets`]; `u32::MAX`: the whole range).
///
/// Hot path: one subtraction and one comparison.
#[inline]
pub fn in_served_part(start: u32, served: u32, bucket: u32) -> bool {
    bucket.wrapping_sub(start) < served
}
