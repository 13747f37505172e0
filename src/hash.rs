//! The frozen mapping from (salt, unit id) to a bucket in `0..10_000`.
//!
//! ```text
//! seed   = xxh3_64(salt bytes)                      (computed once, at config load)
//! h      = xxh3_64_with_seed(unit id bytes, seed)
//! while h >= LIMIT:  h = xxh3_64_with_seed(h as 8 little-endian bytes, seed)
//! bucket = h % 10_000
//! LIMIT  = 2^64 - (2^64 mod 10_000) = 18_446_744_073_709_550_000
//! ```
//!
//! Rejecting the top 1,616 hash values makes every bucket own exactly the same number
//! of hash values, so the mapping has no modulo bias at all (a rehash happens with
//! probability 1616 / 2^64, i.e. never in practice, but the rule is defined). This
//! mapping is part of the product contract (docs/hashing.md): the golden vectors in the
//! tests freeze it, so a unit keeps its variant across restarts, instances and upgrades.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Buckets per layer (and per experiment, for the variant pick).
pub const BUCKETS: u32 = 10_000;

/// Hash values at or above this are rehashed (see module doc).
pub const LIMIT: u64 = u64::MAX - (u64::MAX % BUCKETS as u64);

/// The hash seed of a salt.
pub fn seed_of(salt: &str) -> u64 {
    xxh3_64(salt.as_bytes())
}

/// The bucket of `unit_id` under `seed`.
///
/// Hot path: called once per layer and once per experiment a unit is in. Allocation-free.
#[inline]
pub fn bucket(seed: u64, unit_id: &[u8]) -> u32 {
    let mut h = xxh3_64_with_seed(unit_id, seed);
    while h >= LIMIT {
        h = xxh3_64_with_seed(&h.to_le_bytes(), seed);
    }
    (h % BUCKETS as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_the_largest_multiple_of_buckets() {
        assert_eq!(LIMIT, 18_446_744_073_709_550_000);
        assert_eq!(LIMIT % BUCKETS as u64, 0);
        assert!(u64::MAX - LIMIT < BUCKETS as u64);
    }
}
