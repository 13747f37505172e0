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
//! INFO line "event writes recovered after N dropped". This bookkeeping is in `retry`.
//!
//! # Shutdown and crashes
//! [`EventWriter::close`] (called after the proxy stopped accepting and in-flight
//! requests finished) drains the queue, writes, fsyncs and joins the thread: every
//! response that was sent has its exposure on disk (or, if the disk refuses this last
//! write too, counted as `write_error`). A `kill -9` loses at most what was queued or
//! buffered, i.e. about one `flush_interval` of events, and may leave a torn last line.

mod retry;

use super::Event;
use retry::{Reports, Retry, RETRY};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

const BUFFER_BYTES: usize = 256 * 1024;

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
                            self.dropped_backing_off();
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
            self.report_recovery();
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
        self.report_at_shutdown();
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
                self.write_succeeded();
            }
            Err(e) => self.write_failed(events, done, &e),
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

    pub(super) fn outcome(i: usize) -> Event {
        Event::Outcome(Outcome {
            ts: SystemTime::now(),
            unit_id: format!("u{i}"),
            metric: "m".into(),
            value: i as f64,
            source: OutcomeSource::Api,
        })
    }

    pub(super) fn opts(dir: &Path, queue: usize, rotate: u64) -> WriterOptions {
        WriterOptions {
            dir: dir.to_path_buf(),
            rotate_bytes: rotate,
            flush_interval: Duration::from_millis(20),
            queue,
            hash_key: None,
            instance: None,
        }
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
