//! The event writer: a dedicated thread that turns queued events into rotated JSON Lines
//! files, without ever being waited on by a request.
//!
//! # Invariants
//! - Requests only call [`EventSink::send`], a non-blocking `try_send` into a bounded
//!   queue (`events.queue`). A full queue drops the event and counts it
//!   (`abgate_events_dropped_total{reason="queue_full"}`); the request is unaffected.
//! - Every event is either written to a file exactly once or counted as dropped exactly
//!   once, with a reason: `queue_full`, `write_error` (the disk refused the bytes) or
//!   `closed` (sent after shutdown). Of the events the writer takes from the queue,
//!   `written + dropped_write_error` is exactly how many it took.
//!
//! # File format and rotation
//! Files are `events-<UTC start time>.jsonl` in `events.dir`; names sort in time order.
//! Each line is one complete JSON object terminated by `\n`. The writer keeps its own
//! buffer and writes whole lines only; the buffer is written when it exceeds 256 KiB and
//! at least every `flush_interval`. When a file reaches `rotate_bytes` it is fsynced and
//! closed, and a new file is started.
//!
//! With `[fleet]` ([`WriterOptions::instance`]) every line also ends with
//! `"event_id"` (a ULID minted here, one per event) and `"instance"`: the fleet's event
//! shipper reads these files from its checkpoint onward and publishes every line, so
//! the files are its write-ahead log. The writer never deletes a file.
//!
//! # Disk errors
//! A failed write (a full disk, or any other I/O error) keeps the current file: no new
//! file is opened because of an error. The writer knows how many bytes of its buffer
//! reached the file; the whole lines among them are written events, and a torn line
//! after them is cut off again (`set_len` back to the last whole line — retried before
//! the next write if even that fails), so the file only ever holds whole lines. The
//! buffer's other events are counted once as `write_error`. The writer then backs off
//! (100 ms, doubling up to 5 s) and retries the same file; events taken from the queue
//! meanwhile are dropped and counted as `write_error` too (the queue keeps draining, so
//! requests never notice). A failing open is retried the same way, so a full disk makes
//! at most one new (empty) file. The ERROR line comes at most once per 10 s and counts
//! the events dropped since the last line; the first write that succeeds again logs one
//! INFO line "event writes recovered after N dropped".
//!
//! # Shutdown and crashes
//! [`EventWriter::close`] (called after the proxy stopped accepting and in-flight
//! requests finished) drains the queue, writes, fsyncs and joins the thread: every
//! response that was sent has its exposure on disk (or, if the disk refuses this last
//! write too, counted as `write_error`). A `kill -9` loses at most what was queued or
//! buffered, i.e. about one `flush_interval` of events, and may leave a torn last line.

use super::Event;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

const BUFFER_BYTES: usize = 256 * 1024;

/// The first wait before retrying after a failed write; it doubles at every failure in a
/// row up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two attempts while the disk keeps refusing writes.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// At most one ERROR line about write errors (and one INFO line about recovering) per
/// this interval.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Counters shared by the sink, the writer and `/metrics`.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Events written to a file (their whole line reached the file).
    pub written: AtomicU64,
    /// Dropped: the queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Dropped: the disk refused the write (or the writer was backing off after such a
    /// refusal when the event came).
    pub dropped_write_error: AtomicU64,
    /// Dropped: sent after the writer closed.
    pub dropped_closed: AtomicU64,
    /// Files rotated.
    pub rotations: AtomicU64,
}

impl WriterStats {
    /// All dropped events.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full.load(Relaxed)
            + self.dropped_write_error.load(Relaxed)
            + self.dropped_closed.load(Relaxed)
    }
}

/// The request side of the queue. Cheap to clone.
#[derive(Clone)]
pub struct EventSink {
    tx: SyncSender<Event>,
    stats: Arc<WriterStats>,
}

impl EventSink {
    /// Queue an event without blocking; count it as dropped if the queue is full.
    ///
    /// Hot path: called once per request.
    #[inline]
    pub fn send(&self, ev: Event) {
        match self.tx.try_send(ev) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.stats.dropped_queue_full.fetch_add(1, Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped_closed.fetch_add(1, Relaxed);
            }
        }
    }

    /// The shared counters.
    pub fn stats(&self) -> &Arc<WriterStats> {
        &self.stats
    }
}

/// Settings of a writer.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Directory of event files.
    pub dir: PathBuf,
    /// Rotation size.
    pub rotate_bytes: u64,
    /// Longest time an event waits in memory.
    pub flush_interval: Duration,
    /// Queue capacity.
    pub queue: usize,
    /// Key for hashing unit ids, when enabled.
    pub hash_key: Option<Vec<u8>>,
    /// With `[fleet]`: this sidecar's instance name. Every line then ends with a fresh
    /// `event_id` and this `instance` (see [`super::encode::fleet_fields`]).
    pub instance: Option<Arc<str>>,
}

/// The writer thread's handle.
pub struct EventWriter {
    sink: EventSink,
    closing: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Check that `dir` exists (creating it) and accepts a file, with a clear message.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create events directory {}: {e}", dir.display()))?;
    let probe = dir.join(format!(".abgate-probe-{}", std::process::id()));
    File::create(&probe)
        .and_then(|mut f| f.write_all(b"ok"))
        .map_err(|e| {
            format!(
                "events directory {} is not writable: {e}; fix its permissions or set [events] dir",
                dir.display()
            )
        })?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// An open event file, as the writer uses it. A trait only so that unit tests can put
/// a disk that fills up (or fails otherwise) under the writer; in production it is a
/// [`File`] opened for appending.
trait EventFile: Send {
    /// One `write(2)`: how many bytes of `buf` reached the file (maybe fewer than all).
    fn write_some(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Cut the file to `len` bytes.
    fn cut_to(&mut self, len: u64) -> io::Result<()>;
    /// fsync.
    fn sync(&mut self) -> io::Result<()>;
}

impl EventFile for File {
    fn write_some(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write(buf)
    }
    fn cut_to(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.sync_all()
    }
}

/// Creates the event file at a path that does not exist yet.
type Opener = Box<dyn FnMut(&Path) -> io::Result<Box<dyn EventFile>> + Send>;

/// The production [`Opener`]: a new file, opened for appending.
fn open_file(path: &Path) -> io::Result<Box<dyn EventFile>> {
    let f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)?;
    Ok(Box::new(f))
}

/// The waits between attempts after failed writes: `first`, doubling up to `max`.
#[derive(Debug, Clone, Copy)]
struct Retry {
    first: Duration,
    max: Duration,
}

const RETRY: Retry = Retry {
    first: RETRY_FIRST,
    max: RETRY_MAX,
};

impl EventWriter {
    /// Start the writer thread. Fails if the directory cannot be written.
    pub fn start(opts: WriterOptions) -> Result<EventWriter, String> {
        Self::start_with(opts, Box::new(open_file), RETRY)
    }

    /// [`EventWriter::start`] with the files made by `open` and the backoff `retry`.
    fn start_with(opts: WriterOptions, open: Opener, retry: Retry) -> Result<EventWriter, String> {
        check_dir(&opts.dir)?;
        let (tx, rx) = mpsc::sync_channel::<Event>(opts.queue);
        let stats = Arc::new(WriterStats::default());
        let closing = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let mut state = WriterState::new(opts, stats.clone(), open, retry);
        let (c, p) = (closing.clone(), paused.clone());
        let thread = std::thread::Builder::new()
            .name("abgate-events".into())
            .spawn(move || state.run(rx, c, p))
            .map_err(|e| format!("cannot start the event writer thread: {e}"))?;
        Ok(EventWriter {
            sink: EventSink { tx, stats },
            closing,
            paused,
            thread: Some(thread),
        })
    }

    /// A sink feeding this writer.
    pub fn sink(&self) -> EventSink {
        self.sink.clone()
    }

    /// Test seam: stop (or resume) consuming the queue, to exercise overflow.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Relaxed);
    }

    /// Drain the queue, write, fsync and stop the thread.
    pub fn close(mut self) -> Arc<WriterStats> {
        self.shutdown();
        self.sink.stats.clone()
    }

    fn shutdown(&mut self) {
        self.paused.store(false, Relaxed);
        self.closing.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What the writer has to say about write errors, kept so that a disk that stays full
/// gives one ERROR line per [`REPORT_EVERY`] (counting every event dropped since the
/// last line) rather than one per attempt, and so that recovering gives one INFO line.
/// Time is passed in, so the rules are tested without waiting.
#[derive(Debug, Default)]
struct Reports {
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

struct WriterState {
    opts: WriterOptions,
    stats: Arc<WriterStats>,
    buf: Vec<u8>,
    buf_events: u64,
    open: Opener,
    file: Option<(Box<dyn EventFile>, PathBuf)>,
    /// Bytes of whole lines in the current file: its length, unless `torn`.
    file_bytes: u64,
    /// The current file may end with a torn line after `file_bytes` (a partial write
    /// whose cut failed): it is cut before anything more is written to it.
    torn: bool,
    retry: Retry,
    /// After a failed attempt: the wait it chose, and until when events are dropped.
    backoff: Option<(Duration, Instant)>,
    reports: Reports,
}

impl WriterState {
    fn new(opts: WriterOptions, stats: Arc<WriterStats>, open: Opener, retry: Retry) -> Self {
        WriterState {
            opts,
            stats,
            buf: Vec::with_capacity(BUFFER_BYTES + 4096),
            buf_events: 0,
            open,
            file: None,
            file_bytes: 0,
            torn: false,
            retry,
            backoff: None,
            reports: Reports::default(),
        }
    }

    fn run(
        &mut self,
        rx: mpsc::Receiver<Event>,
        closing: Arc<AtomicBool>,
        paused: Arc<AtomicBool>,
    ) {
        let key = self.opts.hash_key.clone();
        let instance = self.opts.instance.clone();
        let hasher = key.map(|k| move |id: &str| super::keyed_unit_hash(&k, id));
        let hash_ref: Option<&dyn Fn(&str) -> String> =
            hasher.as_ref().map(|h| h as &dyn Fn(&str) -> String);
        // The writer never blocks in `recv`: a receiver parked on the channel would make
        // every request's `try_send` pay for a futex wake-up and two context switches.
        // It drains what is queued, then sleeps a short tick; requests only push.
        let tick = (self.opts.flush_interval / 4)
            .clamp(Duration::from_millis(1), Duration::from_millis(5));
        let mut last_flush = Instant::now();
        loop {
            if paused.load(Relaxed) && !closing.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let closing_now = closing.load(Relaxed);
            let mut disconnected = false;
            loop {
                match rx.try_recv() {
                    Ok(ev) => {
                        // Backing off after a failed write: the event is dropped, and
                        // counted, without being encoded. (At shutdown the last events
                        // get one more attempt.)
                        if !closing_now && self.backing_off() {
                            drop(ev);
                            self.stats.dropped_write_error.fetch_add(1, Relaxed);
                            self.reports.dropped(1);
                            continue;
                        }
                        ev.encode(&mut self.buf, hash_ref);
                        if let Some(instance) = &instance {
                            let id = super::ulid(SystemTime::now());
                            super::encode::fleet_fields(&mut self.buf, id, instance);
                        }
                        self.buf_events += 1;
                        if self.buf.len() >= BUFFER_BYTES {
                            self.flush();
                            last_flush = Instant::now();
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        disconnected = true;
                        break;
                    }
                }
            }
            if closing_now || disconnected {
                break;
            }
            if last_flush.elapsed() >= self.opts.flush_interval {
                self.flush();
                last_flush = Instant::now();
            }
            if self.reports.recovery_pending {
                if let Some(n) = self.reports.recovery_due(Instant::now()) {
                    self.log_recovered(n);
                }
            }
            std::thread::sleep(tick);
        }
        self.flush();
        if self.torn {
            // The last write was torn and the cut failed: one more try before leaving.
            let _ = self.cut_torn_line();
        }
        if let Some((f, path)) = &mut self.file {
            if let Err(e) = f.sync() {
                tracing::error!(
                    "event writer: fsync of {} at shutdown failed: {e}",
                    path.display()
                );
            }
        }
        // What the rate limit held back is told now, in one line.
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

    /// Whether events are to be dropped now, after a failed write.
    fn backing_off(&self) -> bool {
        self.backoff
            .is_some_and(|(_, until)| Instant::now() < until)
    }

    fn open_new(&mut self) -> io::Result<()> {
        let stamp = humantime::format_rfc3339_micros(SystemTime::now())
            .to_string()
            .replace([':', '-'], "");
        let mut path = self.opts.dir.join(format!("events-{stamp}.jsonl"));
        let mut n = 1;
        while path.exists() {
            path = self.opts.dir.join(format!("events-{stamp}-{n}.jsonl"));
            n += 1;
        }
        std::fs::create_dir_all(&self.opts.dir)?;
        let f = (self.open)(&path)?;
        self.file = Some((f, path));
        self.file_bytes = 0;
        self.torn = false;
        Ok(())
    }

    /// Cut a torn line off the end of the current file.
    fn cut_torn_line(&mut self) -> io::Result<()> {
        if let Some((f, _)) = &mut self.file {
            f.cut_to(self.file_bytes)?;
        }
        self.torn = false;
        Ok(())
    }

    /// Write the buffer to the current file, opening one when there is none. `done`
    /// counts the bytes of the buffer that reached the file, also when it fails.
    fn write_buf(&mut self, done: &mut usize) -> io::Result<()> {
        if self.file.is_none() {
            self.open_new()?;
        }
        if self.torn {
            self.cut_torn_line()?;
        }
        let (f, _) = self.file.as_mut().expect("opened above");
        while *done < self.buf.len() {
            match f.write_some(&self.buf[*done..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => *done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Write the buffer out. Every event in it is counted once: written when its whole
    /// line reached the file, else dropped as `write_error`. A failure keeps the file,
    /// cuts a torn line off it, and starts (or lengthens) the backoff.
    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let events = std::mem::take(&mut self.buf_events);
        let mut done = 0;
        match self.write_buf(&mut done) {
            Ok(()) => {
                self.file_bytes += self.buf.len() as u64;
                self.stats.written.fetch_add(events, Relaxed);
                self.backoff = None;
                if let Some(n) = self.reports.succeeded(Instant::now()) {
                    self.log_recovered(n);
                }
            }
            Err(e) => {
                // Every event is one line ending in `\n`: the whole lines among the
                // bytes that reached the file are written events.
                let whole = memchr::memrchr(b'\n', &self.buf[..done]).map_or(0, |i| i + 1);
                let written =
                    (memchr::memchr_iter(b'\n', &self.buf[..whole]).count() as u64).min(events);
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
                self.failed(events - written, &e);
            }
        }
        self.buf.clear();
        if self.file_bytes >= self.opts.rotate_bytes && !self.torn {
            if let Some((mut f, path)) = self.file.take() {
                if let Err(e) = f.sync() {
                    tracing::error!("event writer: fsync of {} failed: {e}", path.display());
                }
                self.stats.rotations.fetch_add(1, Relaxed);
            }
        }
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

    fn log_recovered(&self, dropped: u64) {
        tracing::info!(
            "event writes recovered after {dropped} dropped (abgate_events_dropped_total{{reason=\"write_error\"}}); writing to {}",
            self.target().display()
        );
    }

    /// The current file, or the directory when none is open.
    fn target(&self) -> &Path {
        self.file
            .as_ref()
            .map_or(self.opts.dir.as_path(), |(_, p)| p.as_path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Outcome, OutcomeSource};
    use std::sync::atomic::Ordering::SeqCst;

    fn outcome(i: usize) -> Event {
        Event::Outcome(Outcome {
            ts: SystemTime::now(),
            unit_id: format!("u{i}"),
            metric: "m".into(),
            value: i as f64,
            source: OutcomeSource::Api,
        })
    }

    fn opts(dir: &Path, queue: usize, rotate: u64) -> WriterOptions {
        WriterOptions {
            dir: dir.to_path_buf(),
            rotate_bytes: rotate,
            flush_interval: Duration::from_millis(20),
            queue,
            hash_key: None,
            instance: None,
        }
    }

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

    #[test]
    fn writer_rotation_loses_and_duplicates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let w = EventWriter::start(opts(dir.path(), 100_000, 4096)).unwrap();
        let sink = w.sink();
        for i in 0..20_000 {
            sink.send(outcome(i));
        }
        let stats = w.close();
        assert_eq!(stats.dropped(), 0);
        assert!(stats.rotations.load(Relaxed) > 1);
        let (events, skipped) = crate::events::reader::read_values(dir.path()).unwrap();
        assert_eq!(skipped, 0);
        let mut seen: Vec<u64> = events
            .iter()
            .map(|v| v["value"].as_f64().unwrap() as u64)
            .collect();
        seen.sort();
        assert_eq!(seen, (0..20_000).collect::<Vec<_>>());
    }

    #[test]
    fn writer_overflow_counts_exactly_the_missing_records() {
        let dir = tempfile::tempdir().unwrap();
        let w = EventWriter::start(opts(dir.path(), 16, 1 << 30)).unwrap();
        w.set_paused(true);
        // let the writer park in its pause loop
        std::thread::sleep(Duration::from_millis(50));
        let sink = w.sink();
        for i in 0..1000 {
            sink.send(outcome(i));
        }
        let stats = w.close();
        let (events, _) = crate::events::reader::read_values(dir.path()).unwrap();
        let dropped = stats.dropped_queue_full.load(Relaxed);
        assert!(dropped >= 1000 - 17, "dropped {dropped}");
        assert_eq!(events.len() as u64 + dropped, 1000);
    }

    #[test]
    fn with_an_instance_every_line_gets_its_own_event_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(dir.path(), 1000, 1 << 30);
        o.instance = Some("pod-a".into());
        let w = EventWriter::start(o).unwrap();
        let sink = w.sink();
        for i in 0..500 {
            sink.send(outcome(i));
        }
        w.close();
        let (events, skipped) = crate::events::reader::read_values(dir.path()).unwrap();
        assert_eq!((events.len(), skipped), (500, 0));
        let ids: std::collections::HashSet<_> = events
            .iter()
            .map(|v| {
                assert_eq!(v["instance"], "pod-a");
                assert_eq!(v["type"], "outcome");
                v["event_id"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(ids.len(), 500);
        assert!(ids.iter().all(|id| id.len() == 26));
    }

    #[test]
    fn unwritable_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let err = EventWriter::start(opts(&file.join("events"), 16, 4096))
            .err()
            .unwrap();
        assert!(err.contains("cannot create events directory"), "{err}");
    }
}
