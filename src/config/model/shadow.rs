//! A variant's shadow: where copies of its served requests go, which requests are
//! copied, the limits that bound what a copy may cost, and how the two responses are
//! compared. Compiled once; the request path reads it through the snapshot.

use http::Method;
use std::time::Duration;

/// `[layer.experiment.variant.shadow]`, compiled.
#[derive(Debug)]
pub struct Shadow {
    /// Index of the upstream that receives the copies.
    pub upstream: usize,
    /// Share of the variant's served requests copied, as written.
    pub share: f64,
    /// Seed of the request-id hash that picks the copied requests.
    pub seed: u64,
    /// Methods copied.
    pub methods: Vec<Method>,
    /// A request body longer than this is not copied.
    pub max_body_bytes: u64,
    /// Response bytes kept per side for the comparison; a longer response is compared
    /// by status and length only.
    pub max_response_bytes: u64,
    /// Copies in flight at most (from the first byte kept to the comparison).
    pub max_in_flight: usize,
    /// Deadline of one copy, from dispatch to the last byte of its response.
    pub timeout: Duration,
    /// How the responses are compared.
    pub compare: ShadowCompare,
}

impl Shadow {
    /// Whether a request with this id hash is in the copied share.
    #[inline]
    pub fn selects(&self, id_hash: u64) -> bool {
        // share · 2^64 as the threshold (u64::MAX rounds to 2^64 as f64: hence `>= 1`).
        self.share >= 1.0 || (id_hash as f64) < self.share * 18_446_744_073_709_551_616.0
    }
}

/// `compare = { json_ignore, float_tolerance }`, compiled.
#[derive(Debug, Clone, Default)]
pub struct ShadowCompare {
    /// JSON pointers (RFC 6901, as written) left out, with everything below them.
    pub json_ignore: Vec<String>,
    /// Numbers whose absolute difference is at most this are equal.
    pub float_tolerance: f64,
}
