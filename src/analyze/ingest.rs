//! The single pass over the event files: every line is parsed ([`super::scan`]) and
//! folded into the aggregates of its experiments ([`ExpAcc`]); unreadable lines and
//! unknown experiments are counted and reported as warnings once the pass is over.
//!
//! An event whose `event_id` was already read (shipped or collected twice) counts once;
//! events without an id are all distinct.
//!
//! Files are read in name (= time) order and lines in file order, so an outcome counts
//! only for the experiments its unit was already exposed to when it is read. Nothing is
//! allocated per line beyond what [`ExpAcc`] documents (and the first sighting of a unit
//! or of an unknown experiment).

use super::aggregate::{ExpAcc, UnitExperiments, UnitMap};
use super::sufficient::Sufficient;
use super::{scan, AnalyzeError, ReadStats};
use crate::config::Config;
use crate::events::reader::for_each_line_bytes;
use rustc_hash::FxHashMap as HashMap;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Unreadable lines quoted in warnings, per kind (invalid, torn); the rest are counted.
const QUOTED_BAD_LINES: usize = 20;

/// What the pass produced.
pub(super) struct Ingested {
    /// Per experiment, in the order of the `exps` given to [`ingest`].
    pub accs: Vec<ExpAcc>,
    /// Every unit seen, with its records.
    pub units: UnitMap,
    /// What was read.
    pub read: ReadStats,
    /// Shadow copies by (experiment, variant).
    pub shadow: BTreeMap<(String, String), super::shadow::ShadowTally>,
    /// Bandit periods by experiment, then period: the first `bandit` record read of each.
    pub bandit: BTreeMap<String, BTreeMap<u64, Vec<crate::events::BanditRecord>>>,
}

/// The state of the pass while lines are read.
struct Pass<'c> {
    // Names are looked up by a linear scan: configs have a handful of experiments,
    // variants and metrics, and comparing a few short strings beats hashing one.
    exp_names: Vec<&'c str>,
    metric_names: Vec<&'c str>,
    out: Ingested,
    unknown_experiments: BTreeMap<String, u64>,
    bad_lines: Vec<String>,
    /// (experiment, period) whose `bandit` records disagree on the shares served.
    bandit_conflicts: BTreeMap<(String, u64), u64>,
    seen: SeenIds,
}

/// The `event_id`s read so far: a ULID is kept as its 128 bits, any other id as text.
/// (Memory grows with the events that carry an id, 16 bytes and the set's overhead
/// each: de-duplication needs every id seen.)
#[derive(Default)]
struct SeenIds {
    ulids: hashbrown::HashSet<u128, rustc_hash::FxBuildHasher>,
    other: hashbrown::HashSet<Box<str>, rustc_hash::FxBuildHasher>,
}

impl SeenIds {
    /// Whether `id` is new (and remember it).
    fn first_sighting(&mut self, id: &str) -> bool {
        match ulid_bits(id) {
            Some(u) => self.ulids.insert(u),
            None => {
                if self.other.contains(id) {
                    return false;
                }
                self.other.insert(id.into())
            }
        }
    }
}

/// The 128 bits of a 26-character ULID (Crockford base32, upper case as abgate writes).
fn ulid_bits(id: &str) -> Option<u128> {
    if id.len() != 26 {
        return None;
    }
    let mut v: u128 = 0;
    for (i, b) in id.bytes().enumerate() {
        let d = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
            .iter()
            .position(|&c| c == b)? as u128;
        if i == 0 && d > 7 {
            return None; // more than 128 bits
        }
        v = (v << 5) | d;
    }
    Some(v)
}

impl Ingested {
    /// The sufficient statistics of every experiment, with the covariates of CUPED
    /// when given.
    pub fn sufficient(self, cfg: &Config, covariates: Option<&HashMap<String, f64>>) -> Sufficient {
        let experiments = self
            .accs
            .iter()
            .enumerate()
            .map(|(index, acc)| match covariates {
                Some(cov) => {
                    let ids = unit_ids(acc, index, &self.units);
                    acc.reduce(cfg, Some(&|ri: usize| cov.get(ids[ri]).copied()))
                }
                None => acc.reduce(cfg, None),
            })
            .collect();
        Sufficient {
            experiments,
            read: self.read,
        }
    }
}

/// The unit id of every record of experiment number `index`.
fn unit_ids<'a>(acc: &ExpAcc, index: usize, units_seen: &'a UnitMap) -> Vec<&'a str> {
    let mut ids = vec![""; acc.records()];
    for (id, list) in units_seen {
        for &(x, ri) in list {
            if x as usize == index {
                ids[ri as usize] = id;
            }
        }
    }
    ids
}

/// Read `files` once into per-experiment aggregates for the experiments `exps` (layer
/// index, experiment index) of `cfg`. `progress` is called every million lines;
/// warnings (unreadable lines, unknown experiments) go to `warn` after the pass.
pub(super) fn ingest(
    cfg: &Config,
    exps: &[(usize, usize)],
    files: &[PathBuf],
    mut progress: impl FnMut(u64),
    mut warn: impl FnMut(String),
) -> Result<Ingested, AnalyzeError> {
    let mut pass = Pass::new(cfg, exps, files.len());
    let (mut torn, mut torn_n): (Vec<String>, u64) = (Vec::new(), 0);
    for_each_line_bytes(
        files,
        |file, n, text| {
            let read = &mut pass.out.read;
            read.lines += 1;
            if read.lines.is_multiple_of(1_000_000) {
                progress(read.lines);
            }
            pass.line(file, n, text);
        },
        |file, n, why| {
            torn_n += 1;
            if torn.len() < QUOTED_BAD_LINES {
                torn.push(format!("{}:{n}: {why}", file.display()));
            }
        },
    )
    .map_err(|e| AnalyzeError::Io(e.to_string()))?;
    // torn lines were never handed to the pass: count them as read and skipped
    pass.out.read.skipped += torn_n;
    pass.out.read.lines += torn_n;
    pass.bad_lines.extend(torn);
    pass.finish(&mut warn)
}

impl<'c> Pass<'c> {
    fn new(cfg: &'c Config, exps: &[(usize, usize)], files: usize) -> Pass<'c> {
        let exp_names: Vec<&str> = exps
            .iter()
            .map(|&(li, ei)| &*cfg.layers[li].experiments[ei].name)
            .collect();
        let metric_names: Vec<&str> = cfg.metrics.iter().map(|m| &*m.name).collect();
        let accs = exps.iter().map(|&at| ExpAcc::new(cfg, at)).collect();
        Pass {
            exp_names,
            metric_names,
            out: Ingested {
                accs,
                units: UnitMap::default(),
                read: ReadStats {
                    files,
                    ..Default::default()
                },
                shadow: BTreeMap::new(),
                bandit: BTreeMap::new(),
            },
            unknown_experiments: BTreeMap::new(),
            bad_lines: Vec::new(),
            bandit_conflicts: BTreeMap::new(),
            seen: SeenIds::default(),
        }
    }

    /// One complete line (`n`-th of `file`).
    fn line(&mut self, file: &Path, n: usize, text: &[u8]) {
        let mut line = scan::Line::empty();
        if let Err(e) = scan::parse(text, &mut line) {
            self.out.read.skipped += 1;
            if self.bad_lines.len() < QUOTED_BAD_LINES {
                self.bad_lines.push(format!(
                    "{}:{n}: not an event ({e}): skipped",
                    file.display()
                ));
            }
            return;
        }
        if let Some(id) = line.event_id.as_deref() {
            if !self.seen.first_sighting(id) {
                self.out.read.duplicates += 1;
                return;
            }
        }
        match &*line.ty {
            "exposure" => self.exposure(&line),
            "outcome" => self.outcome(&line),
            "shadow" => self.shadow(file, n, text),
            "bandit" => self.bandit(file, n, text),
            _ => {}
        }
    }

    /// A shadow copy: read again in full (these lines are few) and tallied.
    fn shadow(&mut self, file: &Path, n: usize, text: &[u8]) {
        match serde_json::from_slice::<super::shadow::ShadowLine>(text) {
            Ok(l) => {
                let key = (l.experiment.clone(), l.variant.clone());
                l.add_to(self.out.shadow.entry(key).or_default());
            }
            Err(e) => {
                self.out.read.skipped += 1;
                if self.bad_lines.len() < QUOTED_BAD_LINES {
                    self.bad_lines.push(format!(
                        "{}:{n}: not a shadow record ({e}): skipped",
                        file.display()
                    ));
                }
            }
        }
    }

    /// A bandit period: read in full (one line per period and sidecar). Of the records of
    /// one (experiment, period, arms) the earliest started is kept, whatever the order
    /// the files are read in (a restart writes its open period again; a sidecar that
    /// joined a fleet writes its own period 0 before it adopts the fleet's); one that
    /// served other shares is counted (sidecars that did not share their periods).
    /// Records of other arms (a history started over after the arms changed) are kept
    /// beside, for the analysis to pick those of the config's arms.
    fn bandit(&mut self, file: &Path, n: usize, text: &[u8]) {
        match serde_json::from_slice::<crate::events::BanditRecord>(text) {
            Ok(r) => {
                let periods = self.out.bandit.entry(r.experiment.clone()).or_default();
                let same = periods.entry(r.period).or_default();
                match same.iter_mut().find(|k| k.variants == r.variants) {
                    None => same.push(r),
                    Some(kept) => {
                        if kept.weights != r.weights {
                            *self
                                .bandit_conflicts
                                .entry((r.experiment.clone(), r.period))
                                .or_default() += 1;
                        }
                        if r.start_unix_ms < kept.start_unix_ms {
                            *kept = r;
                        }
                    }
                }
            }
            Err(e) => {
                self.out.read.skipped += 1;
                if self.bad_lines.len() < QUOTED_BAD_LINES {
                    self.bad_lines.push(format!(
                        "{}:{n}: not a bandit record ({e}): skipped",
                        file.display()
                    ));
                }
            }
        }
    }

    /// An exposure: a request for every experiment it assigns (forced assignments are
    /// not exposures), and the first exposure of each unit to each experiment.
    fn exposure(&mut self, line: &scan::Line<'_>) {
        self.out.read.exposures += 1;
        let Some(assignments) = &line.assignments else {
            return;
        };
        // the unit's entry, kept while consecutive assignments share the unit
        let mut cur: Option<(&str, &mut UnitExperiments)> = None;
        for a in assignments {
            if a.forced {
                continue;
            }
            let Some(ei) = self.exp_names.iter().position(|n| *n == &*a.experiment) else {
                *self
                    .unknown_experiments
                    .entry(a.experiment.to_string())
                    .or_default() += 1;
                continue;
            };
            let acc = &mut self.out.accs[ei];
            let Some(vi) = acc.variant_index(&a.variant) else {
                continue;
            };
            acc.count_request(vi, line.latency_ms, line.error.is_some());
            let Some(uid) = a.unit_id.as_deref().or(line.unit_id.as_deref()) else {
                continue;
            };
            if cur.as_ref().is_none_or(|(u, _)| *u != uid) {
                cur = Some((uid, self.out.units.entry_ref(uid).or_default()));
            }
            let Some((_, list)) = cur.as_mut() else {
                continue;
            };
            acc.expose(list, ei, vi, line.ts.as_deref(), a.bandit_period);
        }
    }

    /// An outcome: added to every experiment its unit is already in.
    fn outcome(&mut self, line: &scan::Line<'_>) {
        self.out.read.outcomes += 1;
        let (Some(uid), Some(metric), Some(value)) = (&line.unit_id, &line.metric, line.value)
        else {
            return;
        };
        let Some(mi) = self.metric_names.iter().position(|n| *n == &**metric) else {
            return;
        };
        let Some(list) = self.out.units.get(&**uid) else {
            return;
        };
        for &(ei, ri) in list {
            self.out.accs[ei as usize].add_outcome(ri as usize, mi, value);
        }
    }

    /// Report what was skipped, and fail when no line matched the config.
    fn finish(self, warn: &mut impl FnMut(String)) -> Result<Ingested, AnalyzeError> {
        let read = &self.out.read;
        for w in self.bad_lines {
            warn(w);
        }
        if read.skipped > QUOTED_BAD_LINES as u64 {
            warn(format!(
                "… {} unreadable lines skipped in all",
                read.skipped
            ));
        }
        for ((exp, period), n) in &self.bandit_conflicts {
            warn(format!(
                "{n} `bandit` records of experiment `{exp}` period {period} name other shares than another (sidecars that did not share their periods?): the earliest started is used"
            ));
        }
        for (name, n) in &self.unknown_experiments {
            warn(format!(
                "{n} exposures name experiment `{name}`, which the config does not define: ignored"
            ));
        }
        if self.out.accs.iter().all(|a| a.records() == 0) {
            return Err(AnalyzeError::NoMatch(format!(
                "none of the {} lines ({} exposures) matches an experiment of the config; check that --config is the config that produced these events",
                read.lines, read.exposures
            )));
        }
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulids_are_kept_as_bits_and_other_ids_as_text() {
        let mut seen = SeenIds::default();
        let id = crate::events::RequestId::new(std::time::SystemTime::now()).to_string();
        assert!(seen.first_sighting(&id));
        assert!(!seen.first_sighting(&id));
        assert_eq!(seen.ulids.len(), 1);
        assert!(seen.first_sighting("not-a-ulid"));
        assert!(!seen.first_sighting("not-a-ulid"));
        assert_eq!(ulid_bits("8ZZZZZZZZZZZZZZZZZZZZZZZZZ"), None);
        assert_eq!(ulid_bits("7ZZZZZZZZZZZZZZZZZZZZZZZZZ"), Some(u128::MAX));
        assert_eq!(ulid_bits("0000000000000000000000000I"), None);
    }
}
