//! `[holdout]`: a share of units kept out of every experiment, by its own hash.

use super::values::share;
use crate::config::raw::RawHoldout;
use crate::config::{Diagnostics, Holdout};
use crate::hash::{seed_of, BUCKETS};

/// The holdout threshold in buckets and the seed of its salt.
pub(super) fn compile_holdout(d: &mut Diagnostics, raw: &RawHoldout) -> Holdout {
    let t = share(d, "holdout.traffic", raw.traffic, "holdout traffic").unwrap_or(0.0);
    if raw.traffic.is_none() {
        d.push("holdout", "missing `traffic`, e.g. traffic = 0.05");
    }
    let salt = raw.salt.clone().unwrap_or_else(|| "abgate-holdout".into());
    Holdout {
        threshold: (t * BUCKETS as f64).round() as u32,
        seed: seed_of(&salt),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{errors, parse, MINIMAL};
    use crate::hash::{seed_of, BUCKETS};

    #[test]
    fn holdout_share_becomes_a_bucket_threshold_with_the_default_salt() {
        let cfg = parse(&format!("{MINIMAL}[holdout]\ntraffic = 0.05\n")).unwrap();
        let h = cfg.holdout.unwrap();
        assert_eq!(h.threshold, (0.05 * BUCKETS as f64).round() as u32);
        assert_eq!(h.seed, seed_of("abgate-holdout"));
        assert!(parse(MINIMAL).unwrap().holdout.is_none());
    }

    #[test]
    fn holdout_without_traffic_or_outside_zero_to_one_is_reported() {
        let e = errors(&format!("{MINIMAL}[holdout]\nsalt = \"s\"\n"));
        assert_eq!(
            e,
            [(
                5,
                "holdout".to_string(),
                "missing `traffic`, e.g. traffic = 0.05".to_string()
            )]
        );
        let e = errors(&format!("{MINIMAL}[holdout]\ntraffic = 1.5\n"));
        assert_eq!(
            e,
            [(
                6,
                "holdout.traffic".to_string(),
                "holdout traffic 1.5 must be between 0 and 1 (e.g. 0.5)".to_string()
            )]
        );
    }
}
