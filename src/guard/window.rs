//! Sliding-window aggregates of one variant: request count, errors and a latency
//! histogram per time slice, all atomics in fixed memory (no per-request storage).
//!
//! The window is `SLICES` slices of `window / SLICES` each. A request adds to the slice
//! of its time; a slice whose epoch is stale is reset by the first writer that sees it
//! (a concurrent increment during that reset may be lost: a bounded, documented
//! imprecision that never blocks). The evaluator sums the slices still inside the window.
//! A separate ring of the last 100 outcomes feeds the catastrophic breaker.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};

/// Slices per window.
pub const SLICES: usize = 30;
/// Latency histogram buckets (log-linear, 8 per power of two of microseconds).
pub const LAT_BUCKETS: usize = 208;
/// Size of the breaker ring.
pub const RECENT: usize = 100;

/// Histogram bucket of a latency in microseconds. Relative resolution 12.5%.
#[inline]
pub fn lat_bucket(us: u64) -> usize {
    let v = us.max(1);
    let exp = 63 - v.leading_zeros() as usize;
    let idx = if exp < 3 {
        v as usize
    } else {
        (exp - 2) * 8 + ((v >> (exp - 3)) & 7) as usize
    };
    idx.min(LAT_BUCKETS - 1)
}

/// Smallest latency (µs) that falls into bucket `i`.
pub fn lat_lower(i: usize) -> u64 {
    if i < 8 {
        return i as u64;
    }
    let exp = i / 8 + 2;
    let sub = (i % 8) as u64;
    (1u64 << exp) + (sub << (exp - 3))
}

struct Slice {
    epoch: AtomicU64,
    count: AtomicU64,
    errors: AtomicU64,
    lat: Box<[AtomicU32]>,
}

/// A variant's window.
pub struct Window {
    slice_ms: u64,
    slices: Box<[Slice]>,
    recent: Box<[AtomicU8]>,
    recent_idx: AtomicU64,
    recent_errors: AtomicI64,
}

/// Sum of the slices inside the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowStats {
    /// Requests.
    pub n: u64,
    /// Errors.
    pub errors: u64,
    /// Latency histogram.
    pub hist: Vec<u64>,
}

impl WindowStats {
    /// Add `other` (another sidecar's window of the same variant) to this one.
    pub fn add(&mut self, other: &WindowStats) {
        self.n += other.n;
        self.errors += other.errors;
        if self.hist.len() < other.hist.len() {
            self.hist.resize(other.hist.len(), 0);
        }
        for (h, o) in self.hist.iter_mut().zip(&other.hist) {
            *h += o;
        }
    }

    /// Error rate (0 when empty).
    pub fn error_rate(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.errors as f64 / self.n as f64
        }
    }

    /// n, mean and variance of latency in ms, from the histogram's bucket midpoints
    /// (12.5% resolution: good enough for a live view, not for a final analysis).
    pub fn latency_summary(&self) -> crate::stats::Summary {
        let mut m = crate::stats::Moments::default();
        for (i, &c) in self.hist.iter().enumerate() {
            if c > 0 {
                let mid = (lat_lower(i) + lat_lower(i + 1)) as f64 / 2.0 / 1000.0;
                m.push_n(mid, c);
            }
        }
        m.summary()
    }

    /// Latency quantile in ms (bucket midpoint), `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.hist.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut acc = 0;
        for (i, &c) in self.hist.iter().enumerate() {
            acc += c;
            if acc >= rank {
                let lo = lat_lower(i) as f64;
                let hi = lat_lower(i + 1) as f64;
                return Some((lo + hi) / 2.0 / 1000.0);
            }
        }
        None
    }
}

impl Window {
    /// A window of `window_ms` milliseconds.
    pub fn new(window_ms: u64) -> Window {
        let slice_ms = (window_ms / SLICES as u64).max(1);
        let slices = (0..SLICES)
            .map(|_| Slice {
                epoch: AtomicU64::new(u64::MAX),
                count: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                lat: (0..LAT_BUCKETS).map(|_| AtomicU32::new(0)).collect(),
            })
            .collect();
        Window {
            slice_ms,
            slices,
            recent: (0..RECENT).map(|_| AtomicU8::new(0)).collect(),
            recent_idx: AtomicU64::new(0),
            recent_errors: AtomicI64::new(0),
        }
    }

    /// Record one request. `now_ms` is any monotonic millisecond clock.
    ///
    /// Hot path: called once per request per experiment. Lock-free, allocation-free.
    #[inline]
    pub fn record(&self, now_ms: u64, latency_us: u64, error: bool) {
        let epoch = now_ms / self.slice_ms;
        let s = &self.slices[(epoch % SLICES as u64) as usize];
        let cur = s.epoch.load(Relaxed);
        if cur != epoch
            && s.epoch
                .compare_exchange(cur, epoch, Relaxed, Relaxed)
                .is_ok()
        {
            s.count.store(0, Relaxed);
            s.errors.store(0, Relaxed);
            for b in s.lat.iter() {
                b.store(0, Relaxed);
            }
        }
        s.count.fetch_add(1, Relaxed);
        if error {
            s.errors.fetch_add(1, Relaxed);
        }
        s.lat[lat_bucket(latency_us)].fetch_add(1, Relaxed);
        let i = self.recent_idx.fetch_add(1, Relaxed) % RECENT as u64;
        let old = self.recent[i as usize].swap(error as u8, Relaxed);
        let delta = error as i64 - old as i64;
        if delta != 0 {
            self.recent_errors.fetch_add(delta, Relaxed);
        }
    }

    /// Sum of the slices whose epoch is within the window ending at `now_ms`.
    pub fn stats(&self, now_ms: u64) -> WindowStats {
        let now_epoch = now_ms / self.slice_ms;
        let mut out = WindowStats {
            n: 0,
            errors: 0,
            hist: vec![0; LAT_BUCKETS],
        };
        for s in self.slices.iter() {
            let e = s.epoch.load(Relaxed);
            if e == u64::MAX || e > now_epoch || now_epoch - e >= SLICES as u64 {
                continue;
            }
            out.n += s.count.load(Relaxed);
            out.errors += s.errors.load(Relaxed);
            for (h, b) in out.hist.iter_mut().zip(s.lat.iter()) {
                *h += b.load(Relaxed) as u64;
            }
        }
        out
    }

    /// Forget everything (after a resume).
    pub fn reset(&self) {
        for s in self.slices.iter() {
            s.epoch.store(u64::MAX, Relaxed);
            s.count.store(0, Relaxed);
            s.errors.store(0, Relaxed);
        }
        for r in self.recent.iter() {
            r.store(0, Relaxed);
        }
        self.recent_errors.store(0, Relaxed);
        self.recent_idx.store(0, Relaxed);
    }

    /// (requests seen in the ring, errors among the last `RECENT`).
    pub fn recent(&self) -> (u64, u64) {
        let n = self.recent_idx.load(Relaxed).min(RECENT as u64);
        (n, self.recent_errors.load(Relaxed).max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_bounded() {
        let mut last = 0;
        for us in [
            1u64, 2, 7, 8, 9, 15, 16, 100, 1000, 10_000, 1_000_000, 60_000_000,
        ] {
            let b = lat_bucket(us);
            assert!(b >= last);
            assert!(
                lat_lower(b) <= us && us < lat_lower(b + 1),
                "{us} in [{}, {})",
                lat_lower(b),
                lat_lower(b + 1)
            );
            last = b;
        }
        assert!(lat_bucket(u64::MAX) < LAT_BUCKETS);
    }

    #[test]
    fn window_forgets_old_slices() {
        let w = Window::new(30_000);
        for i in 0..100 {
            w.record(0, 10_000, i % 10 == 0);
        }
        let s = w.stats(0);
        assert_eq!((s.n, s.errors), (100, 10));
        let p50 = s.quantile_ms(0.5).unwrap();
        assert!((p50 - 10.0).abs() < 1.0, "{p50}");
        assert_eq!(w.stats(30_000).n, 0, "a full window later nothing is left");
        w.record(31_000, 5_000, false);
        assert_eq!(w.stats(31_000).n, 1);
    }

    #[test]
    fn breaker_ring_counts_last_hundred() {
        let w = Window::new(60_000);
        for _ in 0..100 {
            w.record(0, 1, true);
        }
        assert_eq!(w.recent(), (100, 100));
        for _ in 0..60 {
            w.record(0, 1, false);
        }
        assert_eq!(w.recent(), (100, 40));
    }
}

/// Approximate count of distinct units (HyperLogLog, 2^12 registers, ~1.6% standard
/// error) in fixed memory, updated lock-free. Lets the admin API show
/// units seen since start without keeping any per-unit state on the proxy.
pub struct DistinctUnits {
    registers: Box<[AtomicU8]>,
}

const HLL_BITS: u32 = 12;

impl Default for DistinctUnits {
    fn default() -> Self {
        DistinctUnits {
            registers: (0..1usize << HLL_BITS).map(|_| AtomicU8::new(0)).collect(),
        }
    }
}

impl DistinctUnits {
    /// Record a unit id.
    ///
    /// Hot path: one hash and one load; the atomic `fetch_max` (a locked compare-and-swap
    /// loop on x86) only when the rank is higher than the register, which is rare once the
    /// register has seen a few units (a rank above r has probability 2^-r).
    #[inline]
    pub fn record(&self, unit_id: &[u8]) {
        let h = xxhash_rust::xxh3::xxh3_64(unit_id);
        let idx = (h >> (64 - HLL_BITS)) as usize;
        let rest = (h << HLL_BITS) | (1 << (HLL_BITS - 1));
        let rank = rest.leading_zeros() as u8 + 1;
        let register = &self.registers[idx];
        if register.load(Relaxed) < rank {
            register.fetch_max(rank, Relaxed);
        }
    }

    /// The estimate (with the small-range correction).
    pub fn estimate(&self) -> f64 {
        let m = (1usize << HLL_BITS) as f64;
        let mut sum = 0.0;
        let mut zeros = 0;
        for r in self.registers.iter() {
            let v = r.load(Relaxed);
            if v == 0 {
                zeros += 1;
            }
            sum += 2f64.powi(-(v as i32));
        }
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let e = alpha * m * m / sum;
        if e <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            e
        }
    }
}

#[cfg(test)]
mod hll_tests {
    use super::*;

    #[test]
    fn distinct_units_estimate_is_within_five_percent() {
        for n in [100u64, 10_000, 200_000] {
            let d = DistinctUnits::default();
            for i in 0..n {
                let id = format!("u{i}");
                d.record(id.as_bytes());
                d.record(id.as_bytes()); // repeats do not count
            }
            let e = d.estimate();
            assert!((e - n as f64).abs() / (n as f64) < 0.05, "{n}: {e}");
        }
    }
}
