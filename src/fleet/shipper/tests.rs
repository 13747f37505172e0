//! The shipper against a broker in memory: order, the checkpoint, rewinds, the backlog.

use super::*;
use futures_util::future::BoxFuture;
use std::borrow::Cow;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Mutex;

/// A broker in memory: records what is published; answers can be held back, a
/// refusal injected, or the whole broker taken down. The test keeps one handle, the
/// shipper another.
struct Fake {
    up: AtomicBool,
    sent: Mutex<Vec<(String, String, Bytes)>>,
    /// Publishes not answered yet: (tag, index of the publish).
    unanswered: Mutex<VecDeque<(u64, usize)>>,
    /// Publishes with index < this are answered; later ones wait.
    allowed: watch::Sender<usize>,
    /// The publish with this index is refused (once).
    fail_at: AtomicUsize,
}

impl Fake {
    fn new() -> Arc<Fake> {
        Arc::new(Fake {
            up: AtomicBool::new(true),
            sent: Mutex::new(Vec::new()),
            unanswered: Mutex::new(VecDeque::new()),
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

impl Publisher for Arc<Fake> {
    fn ready(&self) -> bool {
        self.up.load(Relaxed)
    }
    fn prepare(&mut self) -> BoxFuture<'_, Result<(), ShipError>> {
        Box::pin(async { Ok(()) })
    }
    fn publish(
        &mut self,
        tag: u64,
        subject: Cow<'static, str>,
        msg_id: &str,
        payload: Bytes,
    ) -> impl std::future::Future<Output = Result<(), ShipError>> + Send + '_ {
        let mut sent = self.sent.lock().unwrap();
        let i = sent.len();
        sent.push((subject.into_owned(), msg_id.to_string(), payload));
        self.unanswered.lock().unwrap().push_back((tag, i));
        async { Ok(()) }
    }
    async fn next_ack(&mut self) -> Result<Ack, ShipError> {
        // answers in order; the oldest stays queued until it is allowed (cancel-safe:
        // it is taken only when answered)
        let front = self.unanswered.lock().unwrap().front().copied();
        let Some((tag, i)) = front else {
            return std::future::pending().await;
        };
        let mut allowed = self.allowed.subscribe();
        let _ = allowed.wait_for(|&n| n > i).await;
        self.unanswered.lock().unwrap().pop_front();
        let refused = self
            .fail_at
            .compare_exchange(i, usize::MAX, Relaxed, Relaxed)
            .is_ok();
        let verdict = match refused {
            true => Err(ShipError::Ack("refused".into())),
            false => Ok(()),
        };
        Ok((tag, verdict))
    }
}

#[test]
fn answers_out_of_order_advance_only_the_acknowledged_prefix() {
    let mut f = InFlight::default();
    for (tag, end) in [(7, 10), (8, 20), (9, 30), (10, 40)] {
        f.sent(tag, end);
    }
    let mut n = 0;
    assert!(!f.waits_for(6) && !f.waits_for(11) && f.waits_for(9));
    assert_eq!(f.acked(9, &mut n), None, "8 still waits");
    assert_eq!(f.acked(8, &mut n), None, "7 still waits");
    assert_eq!(f.acked(7, &mut n), Some(30));
    assert_eq!(n, 3);
    assert!(!f.waits_for(9), "an answered tag is not waited for twice");
    assert_eq!(f.acked(10, &mut n), Some(40));
    assert_eq!((n, f.lines.len()), (4, 0));
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
