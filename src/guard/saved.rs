//! The live state a running proxy serves, read back from the state directory without
//! changing it, for tools that answer "where does this unit go now" (`abgate assign`):
//! each bandit experiment's table (from its weight history) and each ramp's current
//! step (from `ramps.json`; a ramp not started yet would start at its first step).

use super::bandit::SavedTables;
use super::ramp::store::{in_served_part, served_buckets, RampStore};
use crate::assign::LiveState;
use crate::config::Config;

/// Bandit tables and ramp steps as saved in `cfg.state_dir`.
pub struct Saved {
    tables: SavedTables,
    /// `[layer][experiment]`: the start of the experiment's range and how many of its
    /// buckets it serves now.
    served: Vec<Vec<(u32, u32)>>,
}

impl Saved {
    /// Read the saved state of every experiment of `cfg`.
    pub fn read(cfg: &Config) -> Saved {
        let ramps = RampStore::open(&cfg.state_dir).ok();
        let now = std::time::SystemTime::now();
        let served = cfg
            .layers
            .iter()
            .map(|l| {
                l.experiments
                    .iter()
                    .map(|e| {
                        let Some(ramp) = &e.ramp else {
                            return (e.start, u32::MAX);
                        };
                        let traffic = match ramps.as_ref().and_then(|r| r.get(&e.name)) {
                            Some(mut s) => {
                                // as the proxy would see it after a reload of this config
                                let _ = s.replan(&e.name, ramp, now);
                                s.traffic
                            }
                            None => ramp.steps[0],
                        };
                        (e.start, served_buckets(e, traffic))
                    })
                    .collect()
            })
            .collect();
        Saved {
            tables: SavedTables::read(cfg),
            served,
        }
    }
}

impl LiveState for Saved {
    fn arm(&self, layer: usize, experiment: usize, bucket: u32) -> Option<(u16, u32)> {
        self.tables.arm(layer, experiment, bucket)
    }

    /// As the proxy decides it: the unit's layer bucket within the served part.
    fn serves(&self, layer: usize, experiment: usize, bucket: u32) -> bool {
        self.served
            .get(layer)
            .and_then(|l| l.get(experiment))
            .is_none_or(|&(start, n)| in_served_part(start, n, bucket))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{parse, MINIMAL};
    use crate::guard::ramp::RampCause;
    use std::time::SystemTime;

    /// How many layer buckets experiment 0 of layer 0 serves under `saved`.
    fn served(cfg: &Config, saved: &Saved) -> u32 {
        let e = &cfg.layers[0].experiments[0];
        (e.start..e.end).filter(|&b| saved.serves(0, 0, b)).count() as u32
    }

    #[test]
    fn a_ramp_serves_its_saved_step_or_its_first_and_reading_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = parse(&format!(
            "{MINIMAL}[[layer]]\nname = \"l\"\n[[layer.experiment]]\nname = \"e\"\n\
             [[layer.experiment.variant]]\nname = \"a\"\nweight = 1\n\
             [[layer.experiment.variant]]\nname = \"b\"\nweight = 1\n\
             [layer.experiment.guardrails]\nerror_rate = {{ max_increase = 0.02 }}\n\
             [layer.experiment.ramp]\nsteps = [0.1, 0.5]\n"
        ))
        .unwrap();
        cfg.state_dir = dir.path().to_path_buf();
        // Not started yet: the first step, and nothing written.
        assert_eq!(
            served(&cfg, &Saved::read(&cfg)),
            super::super::ramp::store::buckets(0.1)
        );
        assert!(!dir.path().join("ramps.json").exists());
        // Advanced to 0.5 by a running proxy: the saved step.
        let exp = &cfg.layers[0].experiments[0];
        let ramp = exp.ramp.clone().unwrap();
        let store = RampStore::open(dir.path()).unwrap();
        store.ensure(exp, SystemTime::now()).unwrap();
        let name = exp.name.clone();
        store
            .update("e", |s| {
                Some(s.advance(&name, &ramp, SystemTime::now(), RampCause::Admin, None))
            })
            .unwrap();
        drop(store);
        assert_eq!(
            served(&cfg, &Saved::read(&cfg)),
            super::super::ramp::store::buckets(0.5)
        );
    }
}
