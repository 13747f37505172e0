//! CPU per message of the ways `async-nats` can publish an event, against a running
//! `nats-server -js` (docs/performance.md, "Fleet on against off"):
//!
//! - `core`: a plain publish with a `Nats-Msg-Id` header, no acknowledgement — the
//!   least any NATS publisher pays per message;
//! - `jetstream`: the client's JetStream publish, awaiting each acknowledgement (256 in
//!   flight) — what the shipper did first;
//! - `reply`: one reply subscription of our own, each message with the reply subject
//!   `<inbox>.<n>`, acknowledgements counted as they come (256 in flight) — what the
//!   shipper does now.
//!
//! ```sh
//! nats-server -js -p 14222 -sd /tmp/nats-cost &
//! cargo run --release --example nats_publish_cost -- nats://127.0.0.1:14222 reply 300000
//! ```
//!
//! It prints the process's CPU time (user + system, from `/proc/self/stat`) per message
//! and the rate; run it pinned (`taskset -c 1`) on an otherwise quiet machine.

use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const IN_FLIGHT: usize = 256;

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ
}

fn id_headers(i: usize) -> async_nats::HeaderMap {
    let mut h = async_nats::HeaderMap::new();
    h.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!("{i:026}").as_str(),
    );
    h
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, mode, n] = &args[..] else {
        eprintln!("usage: nats_publish_cost NATS_URL core|jetstream|reply MESSAGES");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("MESSAGES is a number");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let client = async_nats::connect(url.as_str()).await.expect("connect");
        let js = async_nats::jetstream::new(client.clone());
        js.get_or_create_stream(async_nats::jetstream::stream::Config {
            name: "PUBLISH_COST".into(),
            subjects: vec!["cost.>".into()],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .expect("stream");
        // the size of a typical exposure line
        let payload = Bytes::from(vec![b'x'; 300]);
        let (cpu0, t0) = (cpu_seconds(), Instant::now());
        match mode.as_str() {
            "core" => {
                for i in 0..n {
                    client
                        .publish_with_headers("core.x", id_headers(i), payload.clone())
                        .await
                        .unwrap();
                }
                client.flush().await.unwrap();
            }
            "jetstream" => {
                let mut acks = VecDeque::new();
                for i in 0..n {
                    let msg = async_nats::jetstream::message::PublishMessage::build()
                        .payload(payload.clone())
                        .message_id(format!("{i:026}"));
                    acks.push_back(js.send_publish("cost.x", msg).await.unwrap());
                    if acks.len() >= IN_FLIGHT {
                        acks.pop_front().unwrap().await.unwrap();
                    }
                }
                while let Some(a) = acks.pop_front() {
                    a.await.unwrap();
                }
            }
            "reply" => {
                let inbox = client.new_inbox();
                let mut answers = client.subscribe(format!("{inbox}.*")).await.unwrap();
                let (mut in_flight, mut answered) = (0, 0);
                for i in 0..n {
                    let reply = format!("{inbox}.{i}");
                    client
                        .publish_with_reply_and_headers(
                            "cost.x",
                            reply,
                            id_headers(i),
                            payload.clone(),
                        )
                        .await
                        .unwrap();
                    in_flight += 1;
                    while in_flight >= IN_FLIGHT {
                        let a = answers.next().await.unwrap();
                        assert!(memchr::memmem::find(&a.payload, b"\"error\"").is_none());
                        (in_flight, answered) = (in_flight - 1, answered + 1);
                    }
                }
                while answered < n {
                    answers.next().await.unwrap();
                    answered += 1;
                }
            }
            other => panic!("unknown mode {other}: core, jetstream or reply"),
        }
        let (cpu1, t1) = (cpu_seconds(), Instant::now());
        println!(
            "{mode}: {:.2} us CPU per message, {:.0} messages/s",
            (cpu1 - cpu0) * 1e6 / n as f64,
            n as f64 / (t1 - t0).as_secs_f64()
        );
    });
}
