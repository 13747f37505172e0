//! The event shipper against a real `nats-server -js` and real abgate processes: every
//! exposure reaches the stream with its `event_id` and `instance`; a broker killed for
//! 30 s under load costs no request and no event; a sidecar restart resumes at its
//! checkpoint; three sidecars through a sidecar stop, a broker `kill -9` and a sidecar
//! restart leave exactly one exposure per answered request in the stream.

mod common;

use common::nats::NatsServer;
use common::{agent, events, metric_sum, start, two_backend, wait_for, Abgate, MockServer};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

const STREAM: &str = "ABGATE_TEST";
/// How long the broker stays down under load.
const OUTAGE: Duration = Duration::from_secs(30);

/// The two-backend config with `[fleet]` on `nats`.
fn config(a: &MockServer, b: &MockServer, nats: &NatsServer, extra: &str) -> String {
    config_of("pod-a", a, b, nats, extra)
}

/// The same for sidecar `instance`.
fn config_of(
    instance: &str,
    a: &MockServer,
    b: &MockServer,
    nats: &NatsServer,
    extra: &str,
) -> String {
    two_backend(common::DIR_PLACEHOLDER, a.addr, b.addr)
        .raw(&format!(
            "[fleet]\nnats_url = \"{}\"\ninstance = \"{instance}\"\nstream = \"{STREAM}\"\n{extra}",
            nats.url()
        ))
        .toml()
}

/// One request with its own `x-request-id`; the status (0: the request failed).
fn request(g: &Abgate, id: &str) -> u16 {
    match agent()
        .get(&g.url("/v1/predict"))
        .set("x-user-id", &format!("user-{id}"))
        .set("x-request-id", id)
        .call()
    {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(_) => 0,
    }
}

/// One message of the stream.
struct Msg {
    subject: String,
    msg_id: Option<String>,
    event: serde_json::Value,
}

/// Every message of the stream, read with an ephemeral pull consumer (bounded: 30 s).
fn read_stream(url: &str) -> Vec<Msg> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use async_nats::jetstream::consumer::{pull, AckPolicy};
        use futures_util::StreamExt;
        let client = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream(STREAM).await.unwrap();
        let total = stream.info().await.unwrap().state.messages as usize;
        let consumer = stream
            .create_consumer(pull::Config {
                ack_policy: AckPolicy::None,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while out.len() < total {
            assert!(Instant::now() < deadline, "read {} of {total}", out.len());
            let mut batch = consumer
                .batch()
                .max_messages(1000)
                .expires(Duration::from_millis(500))
                .messages()
                .await
                .unwrap();
            while let Some(m) = batch.next().await {
                let m = m.unwrap();
                out.push(Msg {
                    subject: m.subject.to_string(),
                    msg_id: m
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Msg-Id"))
                        .map(|v| v.to_string()),
                    event: serde_json::from_slice(&m.payload).unwrap(),
                });
            }
        }
        out
    })
}

fn exposures(v: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    v.iter().filter(|e| e["type"] == "exposure").collect()
}

fn shipped(g: &Abgate) -> f64 {
    metric_sum(&g.metrics(), "abgate_events_shipped_total", &[])
}

#[test]
fn every_exposure_reaches_the_stream_with_its_id_and_instance() {
    let (a, b) = (
        MockServer::builder().name("a").start().unwrap(),
        MockServer::builder().name("b").start().unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start();
    let g = start(dir.path(), &config(&a, &b, &nats, ""));
    let n = 300;
    for i in 0..n {
        assert_eq!(request(&g, &format!("req-{i}")), 200);
    }
    let local = wait_for(10, "the local log", || {
        let ev = events(&dir.path().join("events"));
        (exposures(&ev).len() == n).then_some(ev)
    });
    wait_for(30, "the stream's acks", || {
        (shipped(&g) >= n as f64).then_some(())
    });
    let m = g.metrics();
    assert_eq!(metric_sum(&m, "abgate_fleet_connected", &[]), 1.0);
    assert_eq!(metric_sum(&m, "abgate_events_ship_backlog_bytes", &[]), 0.0);

    let msgs = read_stream(&nats.url());
    assert_eq!(msgs.len(), local.len());
    for m in &msgs {
        let id = m.event["event_id"].as_str().unwrap();
        assert_eq!(id.len(), 26);
        assert_eq!(m.msg_id.as_deref(), Some(id), "Nats-Msg-Id is the event id");
        assert_eq!(m.event["instance"], "pod-a");
        assert_eq!(
            m.subject,
            format!("abgate.events.{}", m.event["type"].as_str().unwrap())
        );
    }
    // the stream holds exactly the local lines
    let as_set = |v: Vec<String>| v.into_iter().collect::<BTreeSet<_>>();
    let stream_lines = as_set(msgs.iter().map(|m| m.event.to_string()).collect());
    let local_lines = as_set(local.iter().map(|e| e.to_string()).collect());
    assert_eq!(stream_lines, local_lines);
    let ids: BTreeSet<_> = local.iter().map(|e| e["event_id"].to_string()).collect();
    assert_eq!(ids.len(), local.len(), "event ids are unique");
    eprintln!("shipped {} events", msgs.len());
}

#[test]
fn a_broker_down_for_30s_under_load_costs_no_request_and_no_event() {
    let (a, b) = (
        MockServer::builder().name("a").start().unwrap(),
        MockServer::builder().name("b").start().unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start();
    let g = Arc::new(start(dir.path(), &config(&a, &b, &nats, "")));
    wait_for(10, "the broker connection", || {
        (metric_sum(&g.metrics(), "abgate_fleet_connected", &[]) == 1.0).then_some(())
    });

    // load: two clients, each request with its own id, until told to stop
    let (stop, sent, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    // a failed assertion below must still stop and join the clients, or their handles
    // would keep abgate alive past the test
    struct Clients(Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>);
    impl Drop for Clients {
        fn drop(&mut self) {
            self.0.store(true, Relaxed);
            for c in self.1.drain(..) {
                let _ = c.join();
            }
        }
    }
    let clients = Clients(
        stop.clone(),
        (0..2)
            .map(|c| {
                let (g, stop, sent, failed) =
                    (g.clone(), stop.clone(), sent.clone(), failed.clone());
                std::thread::spawn(move || {
                    let mut i = 0;
                    while !stop.load(Relaxed) && i < 200_000 {
                        if request(&g, &format!("c{c}-{i}")) != 200 {
                            failed.fetch_add(1, Relaxed);
                        }
                        sent.fetch_add(1, Relaxed);
                        i += 1;
                        // about 1,000 requests per second per client: a 30 s outage
                        // stays a few tens of thousands of events
                        std::thread::sleep(Duration::from_micros(700));
                    }
                })
            })
            .collect(),
    );
    std::thread::sleep(Duration::from_secs(1));
    nats.stop();
    let down = Instant::now();
    let backlog = |g: &Abgate| metric_sum(&g.metrics(), "abgate_events_ship_backlog_bytes", &[]);
    let mut peak = 0.0f64;
    let mut samples = Vec::new();
    while down.elapsed() < OUTAGE {
        let b = backlog(&g);
        samples.push(b);
        peak = peak.max(b);
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(metric_sum(&g.metrics(), "abgate_fleet_connected", &[]), 0.0);
    assert!(
        samples.last() > samples.first() && peak > 0.0,
        "the backlog grows while the broker is down: {samples:?}"
    );
    nats.restart();
    let up = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    drop(clients);
    let sent = sent.load(Relaxed);
    assert_eq!(failed.load(Relaxed), 0, "no request failed ({sent} sent)");

    let local = wait_for(10, "every exposure in the local log", || {
        let ev = events(&dir.path().join("events"));
        (exposures(&ev).len() as u64 == sent).then_some(ev)
    });
    wait_for(60, "the backlog to drain", || {
        (backlog(&g) == 0.0 && shipped(&g) >= local.len() as f64).then_some(())
    });
    let drained = up.elapsed();
    let msgs = read_stream(&nats.url());
    // duplicates (if any got past the stream's window) carry the same event id and line
    let mut by_id: BTreeMap<String, Vec<&Msg>> = BTreeMap::new();
    for m in &msgs {
        by_id
            .entry(m.event["event_id"].as_str().unwrap().to_string())
            .or_default()
            .push(m);
    }
    for copies in by_id.values() {
        assert!(copies.iter().all(|c| c.event == copies[0].event));
    }
    assert_eq!(by_id.len(), local.len(), "every local event, once by id");
    // after de-duplication, each response has exactly one exposure
    let mut per_request: BTreeMap<String, usize> = BTreeMap::new();
    for copies in by_id.values() {
        let e = &copies[0].event;
        if e["type"] == "exposure" {
            *per_request
                .entry(e["request_id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    assert_eq!(per_request.len() as u64, sent);
    assert!(per_request.values().all(|&n| n == 1));
    eprintln!(
        "{sent} requests, 0 failed; backlog peak {peak} bytes; drained {:.1} s after the broker returned; {} messages in the stream for {} events",
        drained.as_secs_f64(),
        msgs.len(),
        by_id.len()
    );
}

#[test]
fn a_restarted_sidecar_resumes_at_its_checkpoint() {
    let (a, b) = (
        MockServer::builder().name("a").start().unwrap(),
        MockServer::builder().name("b").start().unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start();
    let text = config(&a, &b, &nats, "");
    let g = start(dir.path(), &text);
    for i in 0..200 {
        assert_eq!(request(&g, &format!("first-{i}")), 200);
    }
    assert!(g.stop().success());
    let checkpoint = dir.path().join("state").join("shipper.checkpoint");
    assert!(checkpoint.exists(), "the stop records the checkpoint");
    let first_run = read_stream(&nats.url()).len();
    assert_eq!(first_run, 200, "a graceful stop ships the tail");

    let g = start(dir.path(), &text);
    for i in 0..100 {
        assert_eq!(request(&g, &format!("second-{i}")), 200);
    }
    wait_for(30, "the new events shipped", || {
        (shipped(&g) >= 100.0).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    let second_run = shipped(&g);
    // nothing of the first run is published again beyond the in-flight window (256)
    assert!(
        (100.0..=100.0 + 256.0).contains(&second_run),
        "second run shipped {second_run}"
    );
    let local = events(&dir.path().join("events"));
    assert_eq!(exposures(&local).len(), 300);
    let msgs = read_stream(&nats.url());
    let ids: BTreeSet<_> = msgs
        .iter()
        .map(|m| m.event["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 300, "nothing lost");
    assert!(g.stop().success());
    eprintln!("restart: first run {first_run} events, second run shipped {second_run} (100 new)");
}

/// A client of one sidecar: requests with their own ids, paced, to whatever address
/// `target` holds (none: the sidecar is down, wait); records the ids the backend
/// answered (200: proxied, so exposed; a stopping sidecar's own 503 is not).
fn client(
    name: &'static str,
    target: Arc<std::sync::Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut answered = Vec::new();
        let mut i = 0;
        while !stop.load(Relaxed) && i < 100_000 {
            let url = target.lock().unwrap().clone();
            let Some(url) = url else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            let id = format!("{name}-{i}");
            i += 1;
            let r = agent()
                .get(&format!("{url}/v1/predict"))
                .set("x-user-id", &format!("user-{id}"))
                .set("x-request-id", &id)
                .call();
            if r.is_ok_and(|r| r.status() == 200) {
                answered.push(id);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        answered
    })
}

#[test]
fn three_sidecars_through_a_stop_a_broker_kill_and_a_restart_leave_one_exposure_per_response() {
    let (a, b) = (
        MockServer::builder().name("a").start().unwrap(),
        MockServer::builder().name("b").start().unwrap(),
    );
    let mut nats = NatsServer::start();
    let names = ["s1", "s2", "s3"];
    let dirs: Vec<tempfile::TempDir> = names.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    let mut sidecars: Vec<Option<Abgate>> = names
        .iter()
        .zip(&dirs)
        .map(|(n, d)| Some(start(d.path(), &config_of(n, &a, &b, &nats, ""))))
        .collect();
    for g in sidecars.iter().flatten() {
        wait_for(10, "the broker connection", || {
            (metric_sum(&g.metrics(), "abgate_fleet_connected", &[]) == 1.0).then_some(())
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let targets: Vec<_> = sidecars
        .iter()
        .map(|g| Arc::new(std::sync::Mutex::new(Some(g.as_ref().unwrap().url("")))))
        .collect();
    let clients: Vec<_> = names
        .iter()
        .zip(&targets)
        .map(|(n, t)| client(n, t.clone(), stop.clone()))
        .collect();
    let pause = |ms| std::thread::sleep(Duration::from_millis(ms));

    // 1. SIGTERM s1 under load (its client stops with it).
    pause(1000);
    *targets[0].lock().unwrap() = None;
    assert!(sidecars[0].take().unwrap().stop().success());
    // 2. The broker killed (-9) and started again on the same store.
    pause(1000);
    nats.stop();
    pause(2000);
    nats.restart();
    // 3. s2 restarted (SIGTERM, then started again on its dirs) under load.
    pause(1000);
    let s2 = sidecars[1].take().unwrap();
    *targets[1].lock().unwrap() = None;
    let s2_config = s2.config.clone();
    assert!(s2.stop().success());
    let s2 = common::start_file(dirs[1].path(), &s2_config);
    *targets[1].lock().unwrap() = Some(s2.url(""));
    sidecars[1] = Some(s2);
    pause(1500);
    stop.store(true, Relaxed);
    let answered: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert!(answered.len() > 1000, "{} answered", answered.len());

    // Every running sidecar ships what it logged; then the stream is read.
    for g in sidecars.iter().flatten() {
        wait_for(60, "the backlog to drain", || {
            let m = g.metrics();
            (metric_sum(&m, "abgate_events_ship_backlog_bytes", &[]) == 0.0
                && metric_sum(&m, "abgate_fleet_connected", &[]) == 1.0)
                .then_some(())
        });
    }
    // The last exposures are written just after their responses: the local logs are
    // read again with the stream until both hold the same ids.
    let local_ids = || -> BTreeSet<String> {
        dirs.iter()
            .flat_map(|d| events(&d.path().join("events")))
            .map(|e| e["event_id"].as_str().unwrap().to_string())
            .collect()
    };
    let (msgs, local) = wait_for(30, "every local event in the stream", || {
        let msgs = read_stream(&nats.url());
        let local = local_ids();
        let ids: BTreeSet<String> = msgs
            .iter()
            .map(|m| m.event["event_id"].as_str().unwrap().to_string())
            .collect();
        (ids == local).then_some((msgs, local.len()))
    });
    // Duplicates share their event_id (and their whole line).
    let mut by_id: BTreeMap<&str, Vec<&Msg>> = BTreeMap::new();
    for m in &msgs {
        assert_eq!(m.msg_id.as_deref(), m.event["event_id"].as_str());
        by_id
            .entry(m.event["event_id"].as_str().unwrap())
            .or_default()
            .push(m);
    }
    for copies in by_id.values() {
        assert!(copies.iter().all(|c| c.event == copies[0].event));
    }
    assert_eq!(by_id.len(), local, "every local event, once by id");
    // After de-duplication each answered request has exactly one exposure.
    let mut per_request: BTreeMap<&str, usize> = BTreeMap::new();
    for copies in by_id.values() {
        let e = &copies[0].event;
        if e["type"] == "exposure" {
            *per_request
                .entry(e["request_id"].as_str().unwrap())
                .or_default() += 1;
        }
    }
    for id in &answered {
        assert_eq!(per_request.get(id.as_str()), Some(&1), "request {id}");
    }
    let instances: BTreeSet<&str> = by_id
        .values()
        .map(|c| c[0].event["instance"].as_str().unwrap())
        .collect();
    assert_eq!(instances, names.into_iter().collect());
    eprintln!(
        "three sidecars: {} answered requests, {} events, {} messages in the stream ({} duplicates by id)",
        answered.len(),
        by_id.len(),
        msgs.len(),
        msgs.len() - by_id.len()
    );
    for g in sidecars.into_iter().flatten() {
        assert!(g.stop().success());
    }
}
