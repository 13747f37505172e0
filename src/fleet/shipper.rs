//! The event shipper: publishes the local event log to the fleet's stream, at least
//! once, off the request path.
//!
//! # Invariants
//! - The local JSON Lines files are the write-ahead log. Requests only ever queue events
//!   for the writer; nothing here is on their path and nothing here blocks them.
//! - The checkpoint (file name + byte offset, `state.dir/shipper.checkpoint`, replaced
//!   atomically) only ever names a position whose every earlier line the stream has
//!   acknowledged. Acknowledgements are taken in line order, so "the last acknowledged
//!   line" is a position, and it is recorded only after its ack arrived.
//! - At most [`ShipperOptions::max_in_flight`] messages await their ack. Any publish or
//!   ack failure (refused, timed out, connection lost) rewinds to the last acknowledged
//!   position and retries after a jittered backoff. No event is ever given up because
//!   of time or a failure: only `max_backlog` skips events, and counts them.
//! - Each message's `Nats-Msg-Id` is the line's `event_id`, so a line published twice
//!   (a retry whose first ack was lost, a restart after a crash) is stored once by the
//!   stream's duplicate window, and any duplicate that gets through carries the same id.
//!
//! # Broker down, restart, overload
//! While the broker is unreachable the shipper waits (it does not publish into a dead
//! connection) and the backlog — bytes of log past the checkpoint, exported as
//! `abgate_events_ship_backlog_bytes` — grows. When it exceeds `max_backlog` the oldest
//! unshipped lines are skipped (whole files first; the files stay on disk) and counted
//! in `abgate_events_ship_dropped_total`. On restart the shipper resumes at the
//! checkpoint; after a crash that re-publishes at most what was in flight or acked since
//! the last checkpoint write (at most [`CHECKPOINT_EVERY`] old). A graceful stop ships
//! the tail for a bounded moment, then records the checkpoint.

use super::log::{self, Found, Log, Pos};
use super::publisher::{AckFuture, Publisher, ShipError};
use crate::runtime::FleetStatus;
use bytes::Bytes;
use futures_util::FutureExt;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The longest the acknowledged position goes unrecorded while shipping.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// How often the backlog gauge and `max_backlog` are brought up to date while shipping
/// (a directory listing and a stat per file each time).
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(250);

/// How often a wait for an acknowledgement checks that the connection is still up.
const CONNECTION_CHECK: Duration = Duration::from_millis(100);

/// How the shipper runs.
#[derive(Debug, Clone)]
pub struct ShipperOptions {
    /// The writer's `events.dir`.
    pub events_dir: PathBuf,
    /// The checkpoint file.
    pub checkpoint: PathBuf,
    /// Unshipped bytes kept at most (`fleet.max_backlog`).
    pub max_backlog: u64,
    /// Messages awaiting their acknowledgement at most.
    pub max_in_flight: usize,
    /// Bytes read from the log at a time.
    pub chunk_bytes: usize,
    /// How often to look for new lines once caught up.
    pub poll: Duration,
    /// This sidecar's instance name (message ids of lines without an `event_id`).
    pub instance: String,
}

impl ShipperOptions {
    /// The defaults for a sidecar with `events_dir` and `state_dir`.
    pub fn new(events_dir: PathBuf, state_dir: &std::path::Path, max_backlog: u64) -> Self {
        ShipperOptions {
            events_dir,
            checkpoint: state_dir.join("shipper.checkpoint"),
            max_backlog,
            max_in_flight: 256,
            chunk_bytes: 1 << 20,
            poll: Duration::from_millis(50),
            instance: String::new(),
        }
    }
}

/// Tells a running shipper to finish: ship what it can until the deadline, record the
/// checkpoint, return.
pub type StopSignal = watch::Sender<Option<Instant>>;

/// The shipper's state.
pub struct Shipper<P: Publisher> {
    opts: ShipperOptions,
    publisher: Arc<P>,
    status: Arc<FleetStatus>,
    log: Log,
    /// Every line before it is acknowledged.
    acked: Pos,
    /// What the checkpoint file says.
    saved: Option<Pos>,
    saved_at: Instant,
    /// When [`Self::housekeeping`] last ran while shipping.
    housekept_at: Option<Instant>,
    stream_ready: bool,
    stop: watch::Receiver<Option<Instant>>,
}

/// Why a shipping round ended.
enum Ended {
    /// Stop was requested and the log is shipped, or the deadline passed.
    Stopped,
    /// A failure: rewind and retry.
    Failed(ShipError),
}

impl From<ShipError> for Ended {
    fn from(e: ShipError) -> Self {
        Ended::Failed(e)
    }
}

/// A line to publish: where it starts and ends in the file being read, its bytes.
struct Line {
    start: u64,
    end: u64,
    payload: Bytes,
}

impl<P: Publisher> Shipper<P> {
    /// A shipper resuming at the checkpoint (or at the oldest file when there is none),
    /// and the signal that stops it.
    pub fn new(
        opts: ShipperOptions,
        publisher: Arc<P>,
        status: Arc<FleetStatus>,
    ) -> (Shipper<P>, StopSignal) {
        let log = Log::new(&opts.events_dir);
        let saved = log::load_checkpoint(&opts.checkpoint);
        let acked = match &saved {
            Some(p) => {
                tracing::info!("shipper: resuming at {} byte {}", p.file, p.offset);
                p.clone()
            }
            None => log.first().unwrap_or_default(),
        };
        let (tx, stop) = watch::channel(None);
        *status.checkpoint.lock().unwrap_or_else(|p| p.into_inner()) =
            saved.as_ref().map(|p| (p.file.clone(), p.offset));
        let s = Shipper {
            opts,
            publisher,
            status,
            log,
            acked,
            saved,
            saved_at: Instant::now(),
            housekept_at: None,
            stream_ready: false,
            stop,
        };
        (s, tx)
    }

    /// Ship until stopped. Returns the last acknowledged position (also recorded).
    pub async fn run(mut self) -> Pos {
        let mut failures = 0usize;
        let mut last_warn: Option<Instant> = None;
        loop {
            match self.round().await {
                Ended::Stopped => break,
                Ended::Failed(e) => {
                    failures += 1;
                    self.stream_ready = false;
                    if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(
                            "shipper: {e}; retrying from {} byte {} (the local log keeps every event)",
                            self.acked.file,
                            self.acked.offset
                        );
                        last_warn = Some(Instant::now());
                    }
                    self.checkpoint(true).await;
                    let pause = super::conn::backoff(failures.min(7));
                    if self.sleep_or_deadline(pause).await {
                        break;
                    }
                }
            }
            if self.deadline_passed() {
                break;
            }
        }
        self.checkpoint(true).await;
        self.acked
    }

    /// Ship from the acknowledged position until a failure or the stop.
    async fn round(&mut self) -> Ended {
        while !self.publisher.ready() {
            if let Err(e) = self.housekeeping().await {
                return e.into();
            }
            // a stopping sidecar waits for the connection too, until its deadline: the
            // connection may be coming up (or back) within it
            if self.sleep_or_deadline(self.opts.poll).await {
                return Ended::Stopped;
            }
        }
        if !self.stream_ready {
            if let Err(e) = self.publisher.prepare().await {
                return e.into();
            }
            self.stream_ready = true;
        }
        let mut in_flight: VecDeque<(u64, AckFuture)> = VecDeque::new();
        loop {
            // A chunk boundary: nothing is in flight, `acked` is where reading resumes.
            self.checkpoint(false).await;
            if self
                .housekept_at
                .is_none_or(|t| t.elapsed() >= HOUSEKEEPING_EVERY)
            {
                self.housekept_at = Some(Instant::now());
                if let Err(e) = self.housekeeping().await {
                    return e.into();
                }
            }
            match self.read().await {
                Err(e) => return e.into(),
                Ok(Found::Idle) => {
                    // caught up: the gauge says so now, not at the next housekeeping
                    if self.status.backlog_bytes.load(Relaxed) != 0 {
                        if let Err(e) = self.housekeeping().await {
                            return e.into();
                        }
                    }
                    if self.stop.borrow().is_some() {
                        return Ended::Stopped; // the log is shipped
                    }
                    self.checkpoint(false).await;
                    if self.sleep_or_deadline(self.opts.poll).await {
                        return Ended::Stopped;
                    }
                }
                Ok(Found::Next { next, torn }) => {
                    if torn > 0 {
                        tracing::warn!(
                            "shipper: {} ends with a torn line ({torn} bytes, a crash mid-write): skipped",
                            self.acked.file
                        );
                    }
                    self.acked = next;
                    self.checkpoint(true).await;
                }
                Ok(Found::Lines {
                    file,
                    start,
                    data,
                    ends,
                }) => {
                    // `acked.file` is `file`: a chunk is read where shipping stands
                    for line in lines(start, &data, &ends) {
                        if let Err(e) = self.send(&file, line, &mut in_flight).await {
                            return e;
                        }
                    }
                    while !in_flight.is_empty() {
                        if let Err(e) = self.await_ack(&mut in_flight).await {
                            return e;
                        }
                    }
                }
            }
        }
    }

    /// Publish one line of `file`, first making room among the messages in flight.
    async fn send(
        &mut self,
        file: &str,
        line: Line,
        in_flight: &mut VecDeque<(u64, AckFuture)>,
    ) -> Result<(), Ended> {
        while in_flight.len() >= self.opts.max_in_flight {
            self.await_ack(in_flight).await?;
        }
        if !self.publisher.ready() {
            return Err(ShipError::NotConnected.into());
        }
        let publisher = self.publisher.clone();
        let fallback_id;
        let msg_id = match event_id(&line.payload) {
            Some(id) => id,
            None => {
                // written without `[fleet]`: an id from the line's place in the log
                fallback_id = format!("{}:{file}:{}", self.opts.instance, line.start);
                &fallback_id
            }
        };
        let subject = subject(event_type(&line.payload));
        let publish = publisher.publish(subject, msg_id, line.payload.clone());
        let ack = match until_deadline(&mut self.stop, publish).await {
            Some(r) => r?,
            None => return Err(Ended::Stopped),
        };
        in_flight.push_back((line.end, ack));
        // take the acks that already arrived, in order
        while let Some((_, ack)) = in_flight.front_mut() {
            match ack.now_or_never() {
                Some(r) => {
                    let (pos, _) = in_flight.pop_front().expect("front exists");
                    self.acked_one(pos, r?);
                }
                None => break,
            }
        }
        Ok(())
    }

    /// Wait for the oldest message's acknowledgement.
    async fn await_ack(&mut self, in_flight: &mut VecDeque<(u64, AckFuture)>) -> Result<(), Ended> {
        let Some((pos, mut ack)) = in_flight.pop_front() else {
            return Ok(());
        };
        // usually the answer is there already: no timer for it
        if let Some(r) = (&mut ack).now_or_never() {
            self.acked_one(pos, r?);
            return Ok(());
        }
        loop {
            // a lost connection fails the wait at once, not after the ack timeout
            let wait = tokio::time::timeout(CONNECTION_CHECK, &mut ack);
            match until_deadline(&mut self.stop, wait).await {
                Some(Ok(r)) => {
                    self.acked_one(pos, r?);
                    return Ok(());
                }
                Some(Err(_)) if !self.publisher.ready() => {
                    return Err(ShipError::NotConnected.into())
                }
                Some(Err(_)) => {}
                None => return Err(Ended::Stopped),
            }
        }
    }

    /// The oldest message in flight is acknowledged: every line of the file being
    /// shipped up to `offset` is. (The position is recorded at the next chunk
    /// boundary: an fsync here would stall the pipeline.)
    fn acked_one(&mut self, offset: u64, _ack: super::publisher::Acked) {
        self.acked.offset = offset;
        self.status.shipped.fetch_add(1, Relaxed);
    }
}

/// The lines of a chunk read at `start` of its file (blank lines are skipped: nothing
/// to ship, and the position still moves past them).
fn lines<'a>(start: u64, data: &'a Bytes, ends: &'a [usize]) -> impl Iterator<Item = Line> + 'a {
    let mut from = 0;
    ends.iter().filter_map(move |&end| {
        let body = data.slice(from..end - 1);
        let line_start = start + from as u64;
        from = end;
        (!body.iter().all(|b| b.is_ascii_whitespace())).then_some(Line {
            start: line_start,
            end: start + end as u64,
            payload: body,
        })
    })
}

/// The subject of an event type: `abgate.events.<type>`, without an allocation for
/// the types abgate writes.
fn subject(ty: &str) -> Cow<'static, str> {
    match ty {
        "exposure" => Cow::Borrowed("abgate.events.exposure"),
        "outcome" => Cow::Borrowed("abgate.events.outcome"),
        "guardrail" => Cow::Borrowed("abgate.events.guardrail"),
        "ramp" => Cow::Borrowed("abgate.events.ramp"),
        "unknown" => Cow::Borrowed("abgate.events.unknown"),
        other => Cow::Owned(format!("abgate.events.{other}")),
    }
}

impl<P: Publisher> Shipper<P> {
    /// Update the backlog gauge and apply `max_backlog` (nothing is in flight).
    async fn housekeeping(&mut self) -> Result<(), ShipError> {
        let log = self.log.clone();
        let (pos, max) = (self.acked.clone(), self.opts.max_backlog);
        let (skipped, backlog) = local_io(move || {
            let skipped = log.enforce_backlog(&pos, max)?;
            let at = skipped.as_ref().map_or(&pos, |s| &s.to);
            let backlog = log.backlog(at)?;
            Ok((skipped, backlog))
        })?;
        self.status.backlog_bytes.store(backlog, Relaxed);
        if let Some(s) = skipped {
            self.status.ship_dropped.fetch_add(s.events, Relaxed);
            tracing::warn!(
                "shipper: unshipped log over fleet.max_backlog ({} bytes): skipped the oldest {} events ({} bytes), now at {} byte {}",
                self.opts.max_backlog,
                s.events,
                s.bytes,
                s.to.file,
                s.to.offset
            );
            self.acked = s.to;
            self.checkpoint(true).await;
        }
        Ok(())
    }

    async fn read(&self) -> Result<Found, ShipError> {
        let log = self.log.clone();
        let (pos, max) = (self.acked.clone(), self.opts.chunk_bytes);
        local_io(move || log.read(&pos, max))
    }

    /// Record the acknowledged position: `force`d, or when it moved and the last record
    /// is older than [`CHECKPOINT_EVERY`]. A failed write is logged; the older
    /// checkpoint stays valid (it only means more re-publishing after a crash).
    async fn checkpoint(&mut self, force: bool) {
        if self.saved.as_ref() == Some(&self.acked)
            || (!force && self.saved_at.elapsed() < CHECKPOINT_EVERY)
        {
            return;
        }
        let (path, pos) = (self.opts.checkpoint.clone(), self.acked.clone());
        match local_io(move || log::save_checkpoint(&path, &pos)) {
            Ok(()) => {
                *self
                    .status
                    .checkpoint
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) =
                    Some((self.acked.file.clone(), self.acked.offset));
                self.saved = Some(self.acked.clone());
            }
            Err(e) => tracing::warn!("shipper: cannot record the checkpoint: {e}"),
        }
        self.saved_at = Instant::now();
    }

    fn deadline_passed(&self) -> bool {
        self.stop.borrow().is_some_and(|d| Instant::now() >= d)
    }

    /// Sleep `d`; true when the stop deadline passed meanwhile.
    async fn sleep_or_deadline(&mut self, d: Duration) -> bool {
        let until = tokio::time::Instant::now() + d;
        loop {
            let deadline = *self.stop.borrow();
            let wake = deadline.map_or(until, |x| until.min(x.into()));
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {
                    return self.deadline_passed();
                }
                changed = self.stop.changed() => {
                    if changed.is_err() {
                        // the handle is gone: nobody will stop us more gently
                        return true;
                    }
                }
            }
        }
    }
}

/// Run `f` unless the stop deadline passes first.
async fn until_deadline<T>(
    stop: &mut watch::Receiver<Option<Instant>>,
    f: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::pin!(f);
    loop {
        let deadline = *stop.borrow();
        let Some(d) = deadline else {
            tokio::select! {
                r = &mut f => return Some(r),
                changed = stop.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
            }
            continue;
        };
        return tokio::time::timeout_at(d.into(), &mut f).await.ok();
    }
}

/// Read the log or write the checkpoint, here: the shipper runs on the fleet thread
/// (`abgate-fleet`), never on the proxy's, so its file I/O (page-cache reads of lines
/// just written, a checkpoint fsync at most every [`CHECKPOINT_EVERY`]) waits only for
/// it, without a hop to the blocking pool per read.
fn local_io<T>(f: impl FnOnce() -> std::io::Result<T>) -> Result<T, ShipError> {
    f().map_err(|e| ShipError::Io(e.to_string()))
}

/// The `event_id` of a line the writer wrote with `[fleet]`: its last field.
pub fn event_id(line: &[u8]) -> Option<&str> {
    const KEY: &[u8] = b"\"event_id\":\"";
    let at = memchr::memmem::rfind(line, KEY)? + KEY.len();
    let id = line.get(at..at + 26)?;
    (line.get(at + 26) == Some(&b'"') && id.iter().all(|b| b.is_ascii_alphanumeric()))
        .then(|| std::str::from_utf8(id).ok())
        .flatten()
}

/// The `type` of a line (`exposure`, `outcome`, `guardrail`, …), for its subject. The
/// writer puts it first; anything else is read with serde. Not a usable subject token:
/// `unknown`.
pub fn event_type(line: &[u8]) -> &str {
    const KEY: &[u8] = b"{\"type\":\"";
    let ty = if let Some(rest) = line.strip_prefix(KEY) {
        memchr::memchr(b'"', rest).and_then(|e| std::str::from_utf8(&rest[..e]).ok())
    } else {
        None
    };
    match ty {
        Some(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => t,
        _ => serde_type(line),
    }
}

fn serde_type(line: &[u8]) -> &'static str {
    #[derive(serde::Deserialize)]
    struct Typed<'a> {
        #[serde(rename = "type", borrow)]
        ty: std::borrow::Cow<'a, str>,
    }
    match serde_json::from_slice::<Typed>(line).ok().map(|t| t.ty) {
        Some(t) if t == "exposure" => "exposure",
        Some(t) if t == "outcome" => "outcome",
        Some(t) if t == "guardrail" => "guardrail",
        Some(t) if t == "ramp" => "ramp",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::publisher::Acked;
    use futures_util::future::BoxFuture;
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::sync::Mutex;

    /// A broker in memory: records what is published; acks can be held back, failed,
    /// or the whole broker taken down.
    struct Fake {
        up: AtomicBool,
        sent: Mutex<Vec<(String, String, Bytes)>>,
        /// Acks of publishes with index < this are answered; later ones wait.
        allowed: watch::Sender<usize>,
        /// The publish with this index fails its ack (once).
        fail_at: AtomicUsize,
    }

    impl Fake {
        fn new() -> Arc<Fake> {
            Arc::new(Fake {
                up: AtomicBool::new(true),
                sent: Mutex::new(Vec::new()),
                allowed: watch::channel(usize::MAX).0,
                fail_at: AtomicUsize::new(usize::MAX),
            })
        }
        fn ids(&self) -> Vec<String> {
            self.sent
                .lock()
                .unwrap()
                .iter()
                .map(|s| s.1.clone())
                .collect()
        }
    }

    impl Publisher for Fake {
        fn ready(&self) -> bool {
            self.up.load(Relaxed)
        }
        fn prepare(&self) -> BoxFuture<'_, Result<(), ShipError>> {
            Box::pin(async { Ok(()) })
        }
        fn publish(
            &self,
            subject: Cow<'static, str>,
            msg_id: &str,
            payload: Bytes,
        ) -> BoxFuture<'_, Result<AckFuture, ShipError>> {
            let mut sent = self.sent.lock().unwrap();
            let i = sent.len();
            sent.push((subject.into_owned(), msg_id.to_string(), payload));
            let fail = self
                .fail_at
                .compare_exchange(i, usize::MAX, Relaxed, Relaxed)
                .is_ok();
            let mut allowed = self.allowed.subscribe();
            Box::pin(async move {
                let ack: AckFuture = Box::pin(async move {
                    let _ = allowed.wait_for(|&n| n > i).await;
                    if fail {
                        Err(ShipError::Ack("refused".into()))
                    } else {
                        Ok(Acked { duplicate: false })
                    }
                });
                Ok(ack)
            })
        }
    }

    /// `n` events in files of `per_file` lines, each with an event id.
    fn write_log(dir: &std::path::Path, n: usize, per_file: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for f in 0..n.div_ceil(per_file) {
            let mut file = std::fs::File::create(dir.join(format!("events-{f:04}.jsonl"))).unwrap();
            for i in f * per_file..((f + 1) * per_file).min(n) {
                let id = format!("{:026}", i);
                writeln!(
                    file,
                    r#"{{"type":"outcome","unit_id":"u{i}","event_id":"{id}","instance":"t"}}"#
                )
                .unwrap();
                ids.push(id);
            }
        }
        ids
    }

    fn options(dir: &std::path::Path) -> ShipperOptions {
        let mut o = ShipperOptions::new(dir.join("events"), &dir.join("state"), 1 << 30);
        o.max_in_flight = 8;
        o.poll = Duration::from_millis(5);
        o.chunk_bytes = 1000;
        o
    }

    async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn ships_every_line_across_rotation_in_order() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("events")).unwrap();
        let ids = write_log(&d.path().join("events"), 100, 30);
        let fake = Fake::new();
        let status = Arc::new(FleetStatus::default());
        let (s, stop) = Shipper::new(options(d.path()), fake.clone(), status.clone());
        let task = tokio::spawn(s.run());
        wait_until("all shipped", || status.shipped.load(Relaxed) == 100).await;
        let _ = stop.send(Some(Instant::now() + Duration::from_secs(5)));
        let end = task.await.unwrap();
        assert_eq!(fake.ids(), ids);
        assert!(fake
            .sent
            .lock()
            .unwrap()
            .iter()
            .all(|s| s.0 == "abgate.events.outcome"));
        assert_eq!(end.file, "events-0003.jsonl");
        assert_eq!(
            log::load_checkpoint(&d.path().join("state/shipper.checkpoint")),
            Some(end)
        );
        assert_eq!(status.backlog_bytes.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn checkpoint_never_passes_an_unacknowledged_line() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("events")).unwrap();
        write_log(&d.path().join("events"), 50, 50);
        let fake = Fake::new();
        fake.allowed.send_replace(5);
        let status = Arc::new(FleetStatus::default());
        let mut o = options(d.path());
        o.chunk_bytes = 1 << 20; // one chunk: only the in-flight bound stops publishing
        let (s, stop) = Shipper::new(o, fake.clone(), status.clone());
        let task = tokio::spawn(s.run());
        // 5 acked, then the in-flight bound (8) stops publishing
        wait_until("the window to fill", || {
            fake.sent.lock().unwrap().len() == 13
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(fake.sent.lock().unwrap().len(), 13);
        assert_eq!(status.shipped.load(Relaxed), 5);
        let _ = stop.send(Some(Instant::now()));
        let end = task.await.unwrap();
        let line = std::fs::read(d.path().join("events/events-0000.jsonl")).unwrap();
        let fifth_end = memchr::memchr_iter(b'\n', &line).nth(4).unwrap() as u64 + 1;
        assert_eq!(end.offset, fifth_end);
        let saved = log::load_checkpoint(&d.path().join("state/shipper.checkpoint")).unwrap();
        assert_eq!(saved.offset, fifth_end);

        // a restart resumes there and ships the rest once
        let fake2 = Fake::new();
        let (s, stop) = Shipper::new(options(d.path()), fake2.clone(), status.clone());
        let task = tokio::spawn(s.run());
        wait_until("the rest", || fake2.sent.lock().unwrap().len() == 45).await;
        let _ = stop.send(Some(Instant::now() + Duration::from_secs(5)));
        task.await.unwrap();
        assert_eq!(fake2.ids().first().unwrap(), &format!("{:026}", 5));
        assert_eq!(fake2.ids().len(), 45);
    }

    #[tokio::test]
    async fn a_failed_ack_rewinds_to_the_last_acknowledged_line() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("events")).unwrap();
        let ids = write_log(&d.path().join("events"), 60, 25);
        let fake = Fake::new();
        fake.fail_at.store(20, Relaxed);
        let status = Arc::new(FleetStatus::default());
        let (s, stop) = Shipper::new(options(d.path()), fake.clone(), status.clone());
        let task = tokio::spawn(s.run());
        wait_until("everything acknowledged", || {
            let sent = fake.ids();
            let unique: std::collections::BTreeSet<_> = sent.iter().collect();
            unique.len() == 60 && status.backlog_bytes.load(Relaxed) == 0
        })
        .await;
        let _ = stop.send(Some(Instant::now() + Duration::from_secs(5)));
        task.await.unwrap();
        let sent = fake.ids();
        // publish 20 failed: 20 and what followed it in flight were published again,
        // starting over at 20 — nothing before it, and nothing lost
        let again = sent.len() - 60;
        assert!((1..=8).contains(&again), "{again} re-published");
        assert_eq!(sent[20 + again..], ids[20..]);
        assert_eq!(sent[..20], ids[..20]);
    }

    #[tokio::test]
    async fn backlog_over_max_is_skipped_and_counted_while_the_broker_is_down() {
        let d = tempfile::tempdir().unwrap();
        let events = d.path().join("events");
        std::fs::create_dir_all(&events).unwrap();
        let ids = write_log(&events, 400, 100);
        // (files 1 to 3 have the same size; the first one's unit ids are shorter)
        let file_bytes = std::fs::metadata(events.join("events-0003.jsonl"))
            .unwrap()
            .len();
        let fake = Fake::new();
        fake.up.store(false, Relaxed);
        let status = Arc::new(FleetStatus::default());
        let mut o = options(d.path());
        // room for a bit more than two files: the oldest two go
        o.max_backlog = file_bytes * 2 + 10;
        let (s, stop) = Shipper::new(o, fake.clone(), status.clone());
        let task = tokio::spawn(s.run());
        wait_until("the skip", || status.ship_dropped.load(Relaxed) > 0).await;
        assert_eq!(status.ship_dropped.load(Relaxed), 200);
        assert!(status.backlog_bytes.load(Relaxed) <= file_bytes * 2 + 10);
        assert!(fake.ids().is_empty());
        fake.up.store(true, Relaxed);
        wait_until("the rest shipped", || status.shipped.load(Relaxed) == 200).await;
        let _ = stop.send(Some(Instant::now() + Duration::from_secs(5)));
        task.await.unwrap();
        assert_eq!(fake.ids(), ids[200..]);
    }

    #[test]
    fn ids_and_types_are_read_from_the_line() {
        let l = br#"{"type":"exposure","unit_id":"x\"event_id\":\"","event_id":"01J0000000000000000000000A","instance":"pod-a"}"#;
        assert_eq!(event_id(l), Some("01J0000000000000000000000A"));
        assert_eq!(event_type(l), "exposure");
        assert_eq!(event_id(br#"{"type":"outcome"}"#), None);
        assert_eq!(event_type(br#"{ "type" : "guardrail"}"#), "guardrail");
        assert_eq!(event_type(br#"{"type":"a.b"}"#), "unknown");
        assert_eq!(event_type(b"garbage"), "unknown");
    }
}
