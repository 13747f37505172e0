//! The event writer's answer to a disk that refuses writes (see "Disk errors" in the
//! writer's design doc): what a failed write counts and cuts off, the backoff before the
//! same file is tried again, and the rate-limited ERROR and recovery INFO lines. The
//! writer thread calls these after each attempt to write.

use super::WriterState;
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// The first wait before retrying after a failed write; it doubles at every failure in a
/// row up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two attempts while the disk keeps refusing writes.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// At most one ERROR line about write errors (and one INFO line about recovering) per
/// this interval.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The waits between attempts after failed writes: `first`, doubling up to `max`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Retry {
    first: Duration,
    max: Duration,
}

pub(super) const RETRY: Retry = Retry {
    first: RETRY_FIRST,
    max: RETRY_MAX,
};

/// What the writer has to say about write errors, kept so that a disk that stays full
/// gives one ERROR line per [`REPORT_EVERY`] (counting every event dropped since the
/// last line) rather than one per attempt, and so that recovering gives one INFO line.
/// Time is passed in, so the rules are tested without waiting.
#[derive(Debug, Default)]
pub(super) struct Reports {
    /// The last attempt to write failed.
    failing: bool,
    /// Failed attempts not told in a line yet.
    unlogged_failures: u64,
    /// Events dropped (`write_error`) not told in a line yet.
    unlogged_dropped: u64,
    last_error_line: Option<Instant>,
    /// Events dropped since the last INFO line: the N of "recovered after N dropped".
    dropped_since_recovered: u64,
    /// Writes succeed again and no INFO line has said so yet (it waits while the last
    /// one is less than [`REPORT_EVERY`] old, so a flapping disk cannot flood the log).
    recovery_pending: bool,
    last_recovery_line: Option<Instant>,
}

/// Whether a line last written at `last` may be written again at `now`.
fn line_due(last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|t| now.saturating_duration_since(t) >= REPORT_EVERY)
}

impl Reports {
    /// `n` events dropped while backing off.
    fn dropped(&mut self, n: u64) {
        self.unlogged_dropped += n;
        self.dropped_since_recovered += n;
    }

    /// An attempt failed and dropped `n` events; `Some((failures, dropped))` since the
    /// last line when an ERROR line is due now.
    fn failed(&mut self, n: u64, now: Instant) -> Option<(u64, u64)> {
        self.dropped(n);
        self.failing = true;
        self.recovery_pending = false;
        self.unlogged_failures += 1;
        if !line_due(self.last_error_line, now) {
            return None;
        }
        self.last_error_line = Some(now);
        Some((
            std::mem::take(&mut self.unlogged_failures),
            std::mem::take(&mut self.unlogged_dropped),
        ))
    }

    /// An attempt wrote everything; `Some(dropped)` when the INFO line is due now.
    fn succeeded(&mut self, now: Instant) -> Option<u64> {
        if self.failing {
            self.failing = false;
            self.recovery_pending = true;
        }
        self.recovery_due(now)
    }

    /// `Some(dropped)` when a recovery waits to be told and its INFO line is due now.
    fn recovery_due(&mut self, now: Instant) -> Option<u64> {
        if !self.recovery_pending || !line_due(self.last_recovery_line, now) {
            return None;
        }
        self.recovery_pending = false;
        self.last_recovery_line = Some(now);
        // The INFO line tells every drop so far: the next ERROR line starts afresh.
        self.unlogged_failures = 0;
        self.unlogged_dropped = 0;
        Some(std::mem::take(&mut self.dropped_since_recovered))
    }
}

impl WriterState {
    /// Whether events are to be dropped now, after a failed write.
    pub(super) fn backing_off(&self) -> bool {
        self.backoff
            .is_some_and(|(_, until)| Instant::now() < until)
    }

    /// An event taken from the queue while backing off: dropped, and counted.
    pub(super) fn dropped_backing_off(&mut self) {
        self.stats.dropped_write_error.fetch_add(1, Relaxed);
        self.reports.dropped(1);
    }

    /// Cut a torn line off the end of the current file.
    pub(super) fn cut_torn_line(&mut self) -> io::Result<()> {
        if let Some((f, _)) = &mut self.file {
            f.cut_to(self.file_bytes)?;
        }
        self.torn = false;
        Ok(())
    }

    /// An attempt wrote the whole buffer: the backoff ends, and recovering is told when
    /// its line is due.
    pub(super) fn write_succeeded(&mut self) {
        self.backoff = None;
        if let Some(n) = self.reports.succeeded(Instant::now()) {
            self.log_recovered(n);
        }
    }

    /// An attempt failed after `done` bytes of the buffer's `events` reached the file:
    /// the whole lines among them are written, a torn line after them is cut off, the
    /// other events are dropped as `write_error`, and the writer backs off.
    pub(super) fn write_failed(&mut self, events: u64, done: usize, e: &io::Error) {
        // Every event is one line ending in `\n`: the whole lines among the
        // bytes that reached the file are written events.
        let whole = memchr::memrchr(b'\n', &self.buf[..done]).map_or(0, |i| i + 1);
        let written = (memchr::memchr_iter(b'\n', &self.buf[..whole]).count() as u64).min(events);
        self.file_bytes += whole as u64;
        if done > whole {
            // A torn line: cut it now, so that the file holds whole lines
            // before the counters say so (or before the next write, if even
            // this fails).
            self.torn = true;
            let _ = self.cut_torn_line();
        }
        self.stats.written.fetch_add(written, Relaxed);
        self.stats
            .dropped_write_error
            .fetch_add(events - written, Relaxed);
        self.failed(events - written, e);
    }

    /// After a failed attempt that dropped `dropped` events: back off (the same file is
    /// retried after it) and log when a line is due.
    fn failed(&mut self, dropped: u64, e: &io::Error) {
        let now = Instant::now();
        let wait = match self.backoff {
            None => self.retry.first,
            Some((w, _)) => (w * 2).min(self.retry.max),
        };
        self.backoff = Some((wait, now + wait));
        if let Some((failures, dropped)) = self.reports.failed(dropped, now) {
            tracing::error!(
                "event writer: cannot write to {}: {e}; {dropped} events dropped (write_error) since the last report, {failures} failed writes; retrying the same file in {wait:?}; requests keep flowing",
                self.target().display()
            );
        }
    }

    pub(super) fn log_recovered(&self, dropped: u64) {
        tracing::info!(
            "event writes recovered after {dropped} dropped (abgate_events_dropped_total{{reason=\"write_error\"}}); writing to {}",
            self.target().display()
        );
    }

    /// A recovery told late (its line was not due when writes resumed), once due.
    pub(super) fn report_recovery(&mut self) {
        if self.reports.recovery_pending {
            if let Some(n) = self.reports.recovery_due(Instant::now()) {
                self.log_recovered(n);
            }
        }
    }

    /// At shutdown, what the rate limit held back, in one line.
    pub(super) fn report_at_shutdown(&mut self) {
        let r = &mut self.reports;
        if r.failing && r.unlogged_dropped > 0 {
            tracing::error!(
                "event writer: at shutdown, {} more events dropped (write_error) since the last report",
                r.unlogged_dropped
            );
        } else if r.recovery_pending {
            let n = std::mem::take(&mut r.dropped_since_recovered);
            self.log_recovered(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{opts, outcome};
    use super::super::{EventFile, EventWriter, Opener, WriterStats};
    use super::*;
    use std::fs::{File, OpenOptions};
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
    use std::sync::Arc;

    /// A disk with `free` bytes left: a write takes what fits (a partial write), then
    /// fails with "no space"; cutting a file gives its bytes back. A test frees space by
    /// adding to `free`, and can make the next cuts or opens fail.
    #[derive(Clone, Default)]
    struct Disk {
        free: Arc<AtomicU64>,
        opens: Arc<AtomicU64>,
        cuts: Arc<AtomicU64>,
        fail_cuts: Arc<AtomicU64>,
        fail_opens: Arc<AtomicU64>,
    }

    struct DiskFile {
        file: File,
        len: u64,
        disk: Disk,
    }

    /// Take one of `n` planned failures, if any is left.
    fn take_one(n: &AtomicU64) -> bool {
        n.fetch_update(SeqCst, SeqCst, |v| v.checked_sub(1)).is_ok()
    }

    impl Disk {
        fn with_free(free: u64) -> Disk {
            let d = Disk::default();
            d.free.store(free, SeqCst);
            d
        }

        fn opener(&self) -> Opener {
            let disk = self.clone();
            Box::new(move |path: &Path| {
                if take_one(&disk.fail_opens) {
                    return Err(io::Error::other("cannot open (test disk)"));
                }
                let file = OpenOptions::new()
                    .create_new(true)
                    .append(true)
                    .open(path)?;
                disk.opens.fetch_add(1, SeqCst);
                Ok(Box::new(DiskFile {
                    file,
                    len: 0,
                    disk: disk.clone(),
                }) as Box<dyn EventFile>)
            })
        }
    }

    impl EventFile for DiskFile {
        fn write_some(&mut self, buf: &[u8]) -> io::Result<usize> {
            // only this thread takes space; the test only gives it
            let free = self.disk.free.load(SeqCst);
            if free == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "No space left on device (test disk)",
                ));
            }
            let n = (buf.len() as u64).min(free) as usize;
            self.file.write_all(&buf[..n])?;
            self.disk.free.fetch_sub(n as u64, SeqCst);
            self.len += n as u64;
            Ok(n)
        }
        fn cut_to(&mut self, len: u64) -> io::Result<()> {
            if take_one(&self.disk.fail_cuts) {
                return Err(io::Error::other("cannot cut (test disk)"));
            }
            self.file.set_len(len)?;
            self.disk.cuts.fetch_add(1, SeqCst);
            self.disk
                .free
                .fetch_add(self.len.saturating_sub(len), SeqCst);
            self.len = self.len.min(len);
            Ok(())
        }
        fn sync(&mut self) -> io::Result<()> {
            self.file.sync_all()
        }
    }

    /// A writer's state on `disk`, driven by the test without its thread.
    fn state_on(dir: &Path, disk: &Disk) -> WriterState {
        let retry = Retry {
            first: Duration::from_millis(100),
            max: Duration::from_secs(5),
        };
        WriterState::new(
            opts(dir, 16, 1 << 30),
            Arc::new(WriterStats::default()),
            disk.opener(),
            retry,
        )
    }

    fn line(i: usize) -> Vec<u8> {
        let mut b = Vec::new();
        outcome(i).encode(&mut b, None);
        b
    }

    /// Buffer `lines` as the writer would.
    fn buffer(s: &mut WriterState, lines: &[Vec<u8>]) {
        for l in lines {
            s.buf.extend_from_slice(l);
            s.buf_events += 1;
        }
    }

    /// The only event file in `dir`, and its bytes.
    fn only_file(dir: &Path) -> (PathBuf, Vec<u8>) {
        let files = crate::events::reader::event_files(&[dir.to_path_buf()]).unwrap();
        assert_eq!(files.len(), 1, "{files:?}");
        let bytes = std::fs::read(&files[0]).unwrap();
        (files[0].clone(), bytes)
    }

    fn counts(s: &WriterState) -> (u64, u64) {
        (
            s.stats.written.load(Relaxed),
            s.stats.dropped_write_error.load(Relaxed),
        )
    }

    #[test]
    fn a_partial_write_is_cut_back_to_the_last_whole_line_and_counted_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<_> = (0..7).map(line).collect();
        // room for two lines and 10 bytes of the third
        let disk = Disk::with_free((lines[0].len() + lines[1].len() + 10) as u64);
        let mut s = state_on(dir.path(), &disk);
        buffer(&mut s, &lines[..5]);
        s.flush();
        let (path, bytes) = only_file(dir.path());
        assert_eq!(bytes, [&lines[0][..], &lines[1][..]].concat());
        assert_eq!(counts(&s), (2, 3));
        assert_eq!(disk.free.load(SeqCst), 10, "the torn bytes are given back");
        assert!(!s.torn);
        let (wait, _) = s.backoff.expect("backing off");
        assert_eq!(wait, Duration::from_millis(100));
        assert!(s.backing_off());
        // Still full: the same file, a longer wait, every event counted once.
        buffer(&mut s, &lines[5..6]);
        s.flush();
        assert_eq!(s.backoff.unwrap().0, Duration::from_millis(200));
        assert_eq!(counts(&s), (2, 4));
        // Space again: the same file goes on after its last whole line.
        disk.free.fetch_add(1 << 20, SeqCst);
        buffer(&mut s, &lines[6..7]);
        s.flush();
        assert!(s.backoff.is_none());
        assert_eq!(counts(&s), (3, 4));
        let (again, bytes) = only_file(dir.path());
        assert_eq!(again, path);
        assert_eq!(
            bytes,
            [&lines[0][..], &lines[1][..], &lines[6][..]].concat()
        );
        assert_eq!(disk.opens.load(SeqCst), 1);
        assert_eq!(
            s.reports.dropped_since_recovered, 0,
            "told in the INFO line"
        );
    }

    #[test]
    fn a_torn_line_that_cannot_be_cut_at_once_is_cut_before_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<_> = (0..4).map(line).collect();
        let disk = Disk::with_free((lines[0].len() + 7) as u64);
        disk.fail_cuts.store(1, SeqCst);
        let mut s = state_on(dir.path(), &disk);
        buffer(&mut s, &lines[..3]);
        s.flush();
        assert_eq!(counts(&s), (1, 2));
        assert!(s.torn, "the cut failed: still to do");
        let (_, bytes) = only_file(dir.path());
        assert_eq!(
            bytes.len(),
            lines[0].len() + 7,
            "the torn line is there for now"
        );
        disk.free.fetch_add(1 << 20, SeqCst);
        buffer(&mut s, &lines[3..]);
        s.flush();
        assert!(!s.torn);
        assert_eq!(counts(&s), (2, 2));
        let (_, bytes) = only_file(dir.path());
        assert_eq!(bytes, [&lines[0][..], &lines[3][..]].concat());
    }

    #[test]
    fn a_file_that_cannot_be_opened_is_retried_not_multiplied() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::with_free(1 << 20);
        disk.fail_opens.store(3, SeqCst);
        let mut s = state_on(dir.path(), &disk);
        for i in 0..3 {
            buffer(&mut s, &[line(i), line(i + 100)]);
            s.flush();
            assert!(s.file.is_none());
        }
        assert_eq!(counts(&s), (0, 6));
        assert_eq!(s.backoff.unwrap().0, Duration::from_millis(400));
        assert!(
            crate::events::reader::event_files(&[dir.path().to_path_buf()])
                .unwrap()
                .is_empty()
        );
        let last = line(7);
        buffer(&mut s, std::slice::from_ref(&last));
        s.flush();
        assert_eq!(counts(&s), (1, 6));
        assert_eq!(only_file(dir.path()).1, last);
        assert_eq!(disk.opens.load(SeqCst), 1);
    }

    #[test]
    fn a_full_disk_keeps_one_file_and_every_event_is_written_or_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::with_free(5_000);
        let retry = Retry {
            first: Duration::from_millis(10),
            max: Duration::from_millis(40),
        };
        let w = EventWriter::start_with(opts(dir.path(), 100_000, 1 << 30), disk.opener(), retry)
            .unwrap();
        let sink = w.sink();
        let stats = sink.stats().clone();
        let accounted = || stats.written.load(SeqCst) + stats.dropped_write_error.load(SeqCst);
        let wait_accounted = |n: u64| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while accounted() != n {
                assert!(
                    Instant::now() < deadline,
                    "{} of {n} accounted",
                    accounted()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        // Far more than fits, paced over some backoff periods.
        let mut sent = 0;
        for _ in 0..40 {
            for _ in 0..50 {
                sink.send(outcome(sent));
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(3));
        }
        wait_accounted(sent as u64);
        let full_written = stats.written.load(SeqCst);
        assert!(full_written > 0 && full_written < 100, "{full_written}");
        let (events, skipped) = crate::events::reader::read_values(dir.path()).unwrap();
        assert_eq!((events.len() as u64, skipped), (full_written, 0));
        assert_eq!(
            disk.opens.load(SeqCst),
            1,
            "one file, however many failures"
        );
        // Space again: writing resumes in the same file once the backoff is over.
        disk.free.fetch_add(1 << 24, SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let before = stats.written.load(SeqCst);
            sink.send(outcome(sent));
            sent += 1;
            wait_accounted(sent as u64);
            if stats.written.load(SeqCst) > before {
                break;
            }
            assert!(Instant::now() < deadline, "writes did not resume");
        }
        let dropped = stats.dropped_write_error.load(SeqCst);
        for _ in 0..500 {
            sink.send(outcome(sent));
            sent += 1;
        }
        let stats = w.close();
        assert_eq!(
            stats.dropped_write_error.load(SeqCst),
            dropped,
            "no drop after recovery"
        );
        assert_eq!(accounted(), sent as u64);
        assert_eq!(stats.dropped_queue_full.load(SeqCst), 0);
        let (events, skipped) = crate::events::reader::read_values(dir.path()).unwrap();
        assert_eq!(
            (events.len() as u64, skipped),
            (stats.written.load(SeqCst), 0)
        );
        let mut seen: Vec<u64> = events
            .iter()
            .map(|v| v["value"].as_f64().unwrap() as u64)
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), events.len(), "no event written twice");
        assert_eq!(disk.opens.load(SeqCst), 1);
        only_file(dir.path());
    }

    #[test]
    fn write_errors_are_reported_once_per_interval_and_recovery_once() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_millis(s);
        let mut r = Reports::default();
        assert_eq!(
            r.failed(5, at(0)),
            Some((1, 5)),
            "the first failure is told at once"
        );
        r.dropped(20);
        assert_eq!(r.failed(3, at(100)), None);
        assert_eq!(r.failed(0, at(9_000)), None);
        r.dropped(2);
        assert_eq!(r.failed(1, at(10_000)), Some((3, 26)));
        assert_eq!(
            r.succeeded(at(10_500)),
            Some(31),
            "recovered after 31 dropped"
        );
        assert_eq!(r.succeeded(at(10_600)), None, "told once");
        // A flapping disk: the next recovery waits for its line, then tells all drops.
        assert_eq!(
            r.failed(4, at(11_000)),
            None,
            "10 s since the last ERROR line"
        );
        assert_eq!(r.succeeded(at(11_100)), None);
        assert!(r.recovery_pending);
        assert_eq!(r.failed(6, at(12_000)), None);
        assert!(!r.recovery_pending, "failing again: nothing recovered yet");
        assert_eq!(r.succeeded(at(13_000)), None);
        assert_eq!(r.recovery_due(at(20_499)), None);
        assert_eq!(r.recovery_due(at(20_500)), Some(10));
        assert_eq!((r.unlogged_failures, r.unlogged_dropped), (0, 0));
        assert_eq!(r.recovery_due(at(40_000)), None);
    }
}
