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

use super::line::{event_id, event_type, subject};
use super::log::{self, Found, Log, Pos};
use super::publisher::{Ack, Publisher, ShipError};
use crate::runtime::FleetStatus;
use bytes::Bytes;
use futures_util::FutureExt;
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

/// How long a message may wait for its acknowledgement before the shipper gives up on
/// the round and retries from the last acknowledged line (the client's own default).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

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
    publisher: P,
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
    /// The tag of the next message (never reused, so a late answer to a message of a
    /// failed round is recognised and ignored).
    next_tag: u64,
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
        publisher: P,
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
            next_tag: 0,
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
        let mut in_flight = InFlight::default();
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
                    if let Err(e) = self.await_acks(&mut in_flight, 0).await {
                        return e;
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
        in_flight: &mut InFlight,
    ) -> Result<(), Ended> {
        if in_flight.lines.len() >= self.opts.max_in_flight {
            self.await_acks(in_flight, self.opts.max_in_flight - 1)
                .await?;
        }
        if !self.publisher.ready() {
            return Err(ShipError::NotConnected.into());
        }
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
        let tag = self.next_tag;
        self.next_tag += 1;
        let publish = self
            .publisher
            .publish(tag, subject, msg_id, line.payload.clone());
        match until_deadline(&mut self.stop, publish).await {
            Some(r) => r?,
            None => return Err(Ended::Stopped),
        }
        in_flight.sent(tag, line.end);
        // take the answers that already arrived
        while let Some(ack) = self.publisher.next_ack().now_or_never() {
            self.answer(in_flight, ack?)?;
        }
        Ok(())
    }

    /// Wait until at most `left` messages are in flight. The oldest waits at most
    /// [`ACK_TIMEOUT`]; a lost connection fails the wait at once.
    async fn await_acks(&mut self, in_flight: &mut InFlight, left: usize) -> Result<(), Ended> {
        while in_flight.lines.len() > left {
            // usually the answer is there already: no timer for it
            if let Some(ack) = self.publisher.next_ack().now_or_never() {
                self.answer(in_flight, ack?)?;
                continue;
            }
            let oldest = in_flight
                .lines
                .front()
                .map_or_else(Instant::now, |l| l.sent);
            let Some(left_to_wait) = ACK_TIMEOUT.checked_sub(oldest.elapsed()) else {
                return Err(ShipError::Ack(format!(
                    "no answer from the broker in {} s",
                    ACK_TIMEOUT.as_secs()
                ))
                .into());
            };
            let wait = tokio::time::timeout(
                CONNECTION_CHECK.min(left_to_wait),
                self.publisher.next_ack(),
            );
            match until_deadline(&mut self.stop, wait).await {
                Some(Ok(ack)) => self.answer(in_flight, ack?)?,
                Some(Err(_)) if !self.publisher.ready() => {
                    return Err(ShipError::NotConnected.into())
                }
                Some(Err(_)) => {}
                None => return Err(Ended::Stopped),
            }
        }
        Ok(())
    }

    /// An answer of the broker: a refusal fails the round; an ack advances the
    /// acknowledged position over every line before the first one still waiting. (The
    /// position is recorded at the next chunk boundary: an fsync here would stall the
    /// pipeline.)
    fn answer(&mut self, in_flight: &mut InFlight, (tag, verdict): Ack) -> Result<(), Ended> {
        if !in_flight.waits_for(tag) {
            return Ok(()); // a message of a failed round, sent again since
        }
        verdict?;
        let mut acked = 0;
        if let Some(end) = in_flight.acked(tag, &mut acked) {
            self.acked.offset = end;
            self.status.shipped.fetch_add(acked, Relaxed);
        }
        Ok(())
    }
}

/// The messages of a round awaiting their answer, oldest first: consecutive tags from
/// `first`.
#[derive(Default)]
struct InFlight {
    first: u64,
    lines: VecDeque<Pending>,
}

struct Pending {
    /// Where its line ends in the file being shipped.
    end: u64,
    sent: Instant,
    acked: bool,
}

impl InFlight {
    fn sent(&mut self, tag: u64, end: u64) {
        if self.lines.is_empty() {
            self.first = tag;
        }
        debug_assert_eq!(tag, self.first + self.lines.len() as u64);
        self.lines.push_back(Pending {
            end,
            sent: Instant::now(),
            acked: false,
        });
    }

    fn waits_for(&self, tag: u64) -> bool {
        tag >= self.first && tag - self.first < self.lines.len() as u64
    }

    /// Mark `tag` acknowledged; the end of the last line of the acknowledged prefix
    /// when it grew (and how many lines it grew by, in `count`).
    fn acked(&mut self, tag: u64, count: &mut u64) -> Option<u64> {
        self.lines[(tag - self.first) as usize].acked = true;
        let mut end = None;
        while self.lines.front().is_some_and(|l| l.acked) {
            let l = self.lines.pop_front().expect("front exists");
            self.first += 1;
            *count += 1;
            end = Some(l.end);
        }
        end
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

#[cfg(test)]
mod tests;
