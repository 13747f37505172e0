//! The `bandit` record: one per period a bandit experiment opens, with the shares its
//! table serves (what the units first seen in that period were assigned by), the
//! weights it moves toward, P(best) and whether it explores. `abgate analyze` reads the
//! weight history of a bandit from these records (the per-period SRM check and the
//! weights chart); several sidecars may write the same period, and the analysis keeps
//! one per (experiment, period).

use serde::{Deserialize, Serialize};
use std::time::SystemTime;

/// One period of a bandit experiment, as written when it opens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BanditRecord {
    /// When the record was written.
    #[serde(with = "crate::rfc3339")]
    pub ts: SystemTime,
    /// The experiment.
    pub experiment: String,
    /// Period number, from 0.
    pub period: u64,
    /// Unix time (ms) the period started.
    pub start_unix_ms: u64,
    /// The weights were equal because the bandit was still exploring.
    pub explore: bool,
    /// The arms (variants), in config order: the order of every array below.
    pub variants: Vec<String>,
    /// Each arm's share of the buckets during the period: the shares served.
    pub weights: Vec<f64>,
    /// The weights computed for the period (where the table moves, `max_shift` allowing).
    pub target_weights: Vec<f64>,
    /// Each arm's probability of being best when the period opened.
    pub prob_best: Vec<f64>,
    /// Which config opened the period.
    pub config_version: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Event;

    #[test]
    fn a_bandit_record_is_one_tagged_line_that_reads_back() {
        let r = BanditRecord {
            ts: SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_796_000_000_000_001),
            experiment: "pick".into(),
            period: 3,
            start_unix_ms: 1_796_000_000_000,
            explore: false,
            variants: vec!["a".into(), "b".into()],
            weights: vec![0.25, 0.75],
            target_weights: vec![0.05, 0.95],
            prob_best: vec![0.01, 0.99],
            config_version: "0e269387a367".into(),
        };
        let mut buf = Vec::new();
        Event::Bandit(Box::new(r.clone())).encode(&mut buf, None);
        let line = String::from_utf8(buf).unwrap();
        assert_eq!(
            line,
            r#"{"type":"bandit","ts":"2026-11-30T00:53:20.000001Z","experiment":"pick","period":3,"start_unix_ms":1796000000000,"explore":false,"variants":["a","b"],"weights":[0.25,0.75],"target_weights":[0.05,0.95],"prob_best":[0.01,0.99],"config_version":"0e269387a367"}"#
                .to_owned()
                + "\n"
        );
        assert_eq!(serde_json::from_str::<BanditRecord>(&line).unwrap(), r);
    }
}
