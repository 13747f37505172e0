//! A bandit's periods as a fleet shares them: what the fleet bucket holds of one period
//! ([`FleetPeriod`]), the open-period counters each sidecar publishes ([`OpenCounters`])
//! and how the fleet's counters add up ([`merge`]), and how a sidecar's history takes
//! the fleet's periods ([`BanditState::splice`]).
//!
//! The table is a pure function of the weight history, so a sidecar serves the fleet's
//! table as soon as its history holds the fleet's periods: [`BanditState::splice`]
//! replaces the local periods from the first one that differs and replays the table.
//! The statistics of a closed period are the fleet's (every sidecar's counters, summed
//! by the sidecar that computed the next period), so the posterior is the same
//! everywhere. The broker side is `crate::fleet::bandits`.

use super::{replay, BanditState, BanditWriteError, Period, Serving};
use crate::stats::bandit::ArmStats;
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// One period as the fleet bucket holds it: written once, by the sidecar that computed
/// it, and opened by every sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetPeriod {
    /// The period: number, start, weights, `max_shift`, shares served, P(best), explore
    /// (its `stats` are zero: they are known when the next period is written).
    pub period: Period,
    /// The fleet's statistics of the period before, as the weights were computed from
    /// them (empty for period 0).
    pub closed: Vec<ArmStats>,
    /// The sidecar that wrote it.
    pub instance: String,
}

/// One sidecar's counters of the open period, as it publishes them (overwriting).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenCounters {
    /// The period they count.
    pub period: u64,
    /// Exposures, sum and sum of squares of rewards per arm.
    pub stats: Vec<ArmStats>,
}

/// The fleet's statistics of an open period: `own` counters plus every other sidecar's,
/// arm by arm (counters of another length are left out).
pub fn merge<'a>(
    own: &[ArmStats],
    others: impl IntoIterator<Item = &'a [ArmStats]>,
) -> Vec<ArmStats> {
    let mut sum = own.to_vec();
    for theirs in others {
        if theirs.len() != sum.len() {
            continue;
        }
        for (s, t) in sum.iter_mut().zip(theirs) {
            s.n += t.n;
            s.sum += t.sum;
            s.sum_sq += t.sum_sq;
        }
    }
    sum
}

/// Whether two periods served the same: number, start, weights, `max_shift`, shares,
/// P(best) and explore (not their statistics).
pub fn same_period(a: &Period, b: &Period) -> bool {
    a.period == b.period
        && a.start_unix_ms == b.start_unix_ms
        && a.weights == b.weights
        && a.max_shift == b.max_shift
        && a.served == b.served
        && a.prob_best == b.prob_best
        && a.explore == b.explore
}

impl BanditState {
    /// A short fingerprint of what a history is about: the arms, in order, and the
    /// reward metric and its kind. Fleet keys carry it, so a changed experiment does not
    /// take an old history (the other settings are recorded per period or only shape
    /// the next computation, as for the local history).
    pub fn fingerprint(&self) -> String {
        let arms = self.lock().arms.join("\u{1f}");
        let what = format!(
            "{arms}\u{1e}{}\u{1e}{}",
            self.settings.reward,
            self.settings.kind.as_str()
        );
        format!("{:08x}", xxhash_rust::xxh3::xxh3_64(what.as_bytes()) as u32)
    }

    /// Periods in the history (the open one included).
    pub fn periods(&self) -> u64 {
        self.lock().periods.len() as u64
    }

    /// Local period `k` as the fleet would hold it, written by `instance`.
    pub fn fleet_period(&self, k: u64, instance: &str) -> Option<FleetPeriod> {
        let h = self.lock();
        let k = usize::try_from(k).ok()?;
        let mut period = h.periods.get(k)?.clone();
        period.stats = vec![ArmStats::default(); h.arms.len()];
        let closed = match k {
            0 => Vec::new(),
            _ => h.periods[k - 1].stats.clone(),
        };
        Some(FleetPeriod {
            period,
            closed,
            instance: instance.to_string(),
        })
    }

    /// Whether local period `k` is `theirs`.
    pub fn holds(&self, k: u64, theirs: &Period) -> bool {
        let h = self.lock();
        usize::try_from(k)
            .ok()
            .and_then(|k| h.periods.get(k))
            .is_some_and(|p| same_period(p, theirs))
    }

    /// This sidecar's counters of the open period so far (without copying the history:
    /// the fleet reads them at every look).
    pub fn open_counters(&self) -> OpenCounters {
        let h = self.lock();
        let Some(last) = h.periods.last() else {
            return OpenCounters {
                period: 0,
                stats: Vec::new(),
            };
        };
        let stats = last
            .stats
            .iter()
            .zip(&self.counters)
            .map(|(s, c)| ArmStats {
                n: s.n + c.n.load(Relaxed),
                sum: s.sum + f64::from_bits(c.sum.load(Relaxed)),
                sum_sq: s.sum_sq + f64::from_bits(c.sum_sq.load(Relaxed)),
            })
            .collect();
        OpenCounters {
            period: last.period,
            stats,
        }
    }

    /// Take the fleet's periods `entries`, numbered from `first` (at most the number of
    /// local periods): the local periods from `first` on are replaced by them, each
    /// entry's `closed` statistics become those of the period before it, the open
    /// period's local counters are dropped (the fleet's sum holds what was published of
    /// them), the table is replayed from the whole history and served, and the history
    /// persisted. Entries whose arms do not match are refused (`Ok(false)`).
    pub fn splice(&self, first: u64, entries: Vec<FleetPeriod>) -> Result<bool, BanditWriteError> {
        let body = {
            let mut h = self.lock();
            let arms = h.arms.len();
            let fits = entries.iter().enumerate().all(|(i, e)| {
                e.period.period == first + i as u64
                    && e.period.weights.len() == arms
                    && (e.closed.is_empty() || e.closed.len() == arms)
            });
            let Ok(first) = usize::try_from(first) else {
                return Ok(false);
            };
            if entries.is_empty() || !fits || first > h.periods.len() {
                return Ok(false);
            }
            for c in &self.counters {
                c.n.store(0, std::sync::atomic::Ordering::Relaxed);
                c.sum
                    .store(0f64.to_bits(), std::sync::atomic::Ordering::Relaxed);
                c.sum_sq
                    .store(0f64.to_bits(), std::sync::atomic::Ordering::Relaxed);
            }
            h.periods.truncate(first);
            for e in entries {
                if let Some(before) = h.periods.last_mut() {
                    if !e.closed.is_empty() {
                        before.stats = e.closed;
                    }
                }
                let mut p = e.period;
                p.stats = vec![ArmStats::default(); arms];
                h.periods.push(p);
            }
            let table = replay(&h);
            let period = h.periods.last().map_or(0, |p| p.period);
            self.serving.store(Arc::new(Serving { period, table }));
            serde_json::to_vec(&*h).expect("bandit history serializes")
        };
        self.save(&body).map(|()| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{parse, MINIMAL};

    fn state(dir: &std::path::Path, arms: &str) -> BanditState {
        let cfg = parse(&format!(
            "{MINIMAL}[[metric]]\nname = \"conv\"\nkind = \"binomial\"\n\
             [[layer]]\nname = \"l\"\n[[layer.experiment]]\nname = \"e\"\ntraffic = 1.0\n{arms}\
             [layer.experiment.bandit]\nreward = \"conv\"\nexplore = \"1ms\"\nmin_units = 10\n\
             max_shift = 0.2\nmin_weight = 0.05\n"
        ))
        .unwrap();
        let exp = &cfg.layers[0].experiments[0];
        BanditState::open_or_start(exp, exp.bandit.as_ref().unwrap(), dir, 0)
    }

    const AB: &str = "[[layer.experiment.variant]]\nname = \"a\"\nweight = 1\n\
                      [[layer.experiment.variant]]\nname = \"b\"\nweight = 1\n";

    fn stats(n: u64, sum: f64) -> ArmStats {
        ArmStats {
            n,
            sum,
            sum_sq: sum,
        }
    }

    #[test]
    fn merge_adds_every_sidecars_counters_arm_by_arm_and_skips_other_shapes() {
        let own = [stats(10, 1.0), stats(20, 4.0)];
        let s2 = [stats(5, 2.0), stats(1, 0.0)];
        let odd = [stats(99, 9.0)];
        let m = merge(&own, [&s2[..], &odd[..]]);
        assert_eq!(m, [stats(15, 3.0), stats(21, 4.0)]);
        assert_eq!(merge(&own, []), own);
    }

    #[test]
    fn a_period_entry_round_trips_through_its_json() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path(), AB);
        let e = s.fleet_period(0, "s1").unwrap();
        let text = serde_json::to_string(&e).unwrap();
        assert!(text.contains("\"instance\":\"s1\""), "{text}");
        assert!(text.contains("\"closed\":[]"), "{text}");
        let back: FleetPeriod = serde_json::from_str(&text).unwrap();
        assert_eq!(back, e);
        let c = OpenCounters {
            period: 3,
            stats: vec![stats(1, 1.0), stats(2, 0.5)],
        };
        let back: OpenCounters = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn the_fingerprint_follows_the_arms_and_the_reward() {
        let (d1, d2, d3) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let a = state(d1.path(), AB);
        let b = state(d2.path(), AB);
        let c = state(
            d3.path(),
            &format!("{AB}[[layer.experiment.variant]]\nname = \"c\"\nweight = 1\n"),
        );
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_eq!(a.fingerprint().len(), 8);
    }

    #[test]
    fn a_spliced_history_serves_the_writers_table_with_the_fleets_statistics() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (s1, s2) = (state(d1.path(), AB), state(d2.path(), AB));
        // s1 computes periods 1 and 2 from the fleet's counters; s2 started apart
        // (another period 0) and takes s1's whole history.
        for (k, fleet) in [
            (1, [stats(100, 10.0), stats(100, 30.0)]),
            (2, [stats(80, 5.0), stats(120, 40.0)]),
        ] {
            let next = s1.next_period_with(k * 1000, &[true, true], Some(&fleet));
            let e = FleetPeriod {
                period: next,
                closed: fleet.to_vec(),
                instance: "s1".into(),
            };
            assert!(s1.splice(k, vec![e]).unwrap());
        }
        assert_eq!(s1.period(), 2);
        assert_eq!(
            s1.history().periods[1].stats,
            [stats(80, 5.0), stats(120, 40.0)]
        );
        s2.expose(0);
        let entries: Vec<FleetPeriod> = (0..3).map(|k| s1.fleet_period(k, "s1").unwrap()).collect();
        assert!(s2.holds(0, &entries[0].period), "both started at 0");
        assert!(!s2.holds(1, &entries[1].period));
        assert!(s2.splice(0, entries).unwrap());
        assert_eq!(s2.serving.load().table, s1.serving.load().table);
        assert_eq!(s2.history().periods, s1.history().periods);
        assert_eq!(s2.open_exposures(), [0, 0], "the open counters start again");
        s2.expose(1);
        s2.reward(1, 1.0);
        assert_eq!(
            s2.open_counters(),
            OpenCounters {
                period: 2,
                stats: vec![ArmStats::default(), stats(1, 1.0)]
            }
        );
        // A restart of s2 reads the spliced history back.
        let again = state(d2.path(), AB);
        assert_eq!(again.serving.load().table, s1.serving.load().table);
        // Entries that do not follow on, or of other arms, are refused.
        let mut bad = s1.fleet_period(2, "s1").unwrap();
        assert!(!s2.splice(5, vec![bad.clone()]).unwrap());
        bad.period.weights.push(0.0);
        assert!(!s2.splice(2, vec![bad]).unwrap());
    }
}
