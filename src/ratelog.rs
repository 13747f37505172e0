//! Rate-limited warnings: one line per interval for a kind of event that can repeat
//! thousands of times a second (refused tokens, failing accepts), carrying how many
//! occurrences it stands for. Lock-free: callers on the request path pay two atomic
//! loads when the line is not due.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// One rate-limited log line.
pub struct RateLog {
    origin: Instant,
    every_ms: u64,
    /// When the last line was written (ms since `origin`, +1 so 0 means never).
    last_ms: AtomicU64,
    /// Occurrences since the last line.
    pending: AtomicU64,
}

impl RateLog {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> RateLog {
        RateLog {
            origin: Instant::now(),
            every_ms: every.as_millis() as u64,
            last_ms: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        }
    }

    /// Count one occurrence; `Some(n)` when a line is due now, standing for `n`
    /// occurrences (this one included). The caller writes the line.
    pub fn hit(&self) -> Option<u64> {
        self.pending.fetch_add(1, Relaxed);
        let now = self.origin.elapsed().as_millis() as u64 + 1;
        let last = self.last_ms.load(Relaxed);
        if last != 0 && now < last + self.every_ms {
            return None;
        }
        // One caller wins the right to write this interval's line.
        if self
            .last_ms
            .compare_exchange(last, now, Relaxed, Relaxed)
            .is_err()
        {
            return None;
        }
        Some(self.pending.swap(0, Relaxed).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_hit_logs_then_one_line_per_interval_counting_the_rest() {
        let log = RateLog::new(Duration::from_millis(200));
        assert_eq!(log.hit(), Some(1));
        for _ in 0..99 {
            assert_eq!(log.hit(), None);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let n = loop {
            std::thread::sleep(Duration::from_millis(20));
            if let Some(n) = log.hit() {
                break n;
            }
            assert!(Instant::now() < deadline);
        };
        // The 99 suppressed hits, the polls in between, and this one.
        assert!(n >= 100, "{n}");
        assert_eq!(log.hit(), None);
    }
}
