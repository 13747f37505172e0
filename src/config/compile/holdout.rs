//! `[holdout]`: a share of units kept out of every experiment, by its own hash.

use super::values::share;
use crate::assign::hash::{seed_of, BUCKETS};
use crate::config::raw::RawHoldout;
use crate::config::{Diagnostics, Holdout};

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
