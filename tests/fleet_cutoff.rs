//! A sidecar cut off from the broker keeps serving with its last known decisions and
//! catches up on reconnect (docs/fleet.md, "What is guaranteed"): three `abgate serve`
//! sidecars with `[fleet]` on one real `nats-server -js`; s1 and s2 connect to it
//! directly, s3 through a TCP relay the test controls (`common::relay`), so the test
//! can cut s3 alone off and bring it back while the broker and the others keep going.
//!
//! Run: `cargo test --test fleet_cutoff -- --nocapture` (prints the time s3 took to
//! notice the cut, its reconnect attempts, and the time to reconnect and catch up).

mod common;

use common::fleet::*;
use common::nats::NatsServer;
use common::relay::Relay;
use common::*;
use serde_json::Value;
use std::time::{Instant, SystemTime};

/// Send each of `users` through `s`'s proxy: every answer is a 200 served by `variant`
/// (`x-abgate-variant`).
fn served_as(s: &Sidecar, users: &[String], variant: &str) {
    let want = format!("{EXP}={variant}");
    for u in users {
        let (status, _, served) = get_as(&s.g, "/v1/chat", u);
        assert_eq!(status, 200, "user {u}");
        assert_eq!(served.as_deref(), Some(want.as_str()), "user {u}");
    }
}

/// Gaps between consecutive instants, in ms.
fn gaps_ms(at: &[Instant]) -> Vec<u128> {
    at.windows(2)
        .map(|w| w[1].duration_since(w[0]).as_millis())
        .collect()
}

#[test]
fn a_sidecar_cut_off_from_the_broker_keeps_its_last_decisions_and_catches_up_on_reconnect() {
    let nats = NatsServer::start();
    let relay = Relay::start(&format!("127.0.0.1:{}", nats.port));
    let a = MockServer::builder().name("a").start().unwrap();
    let b = MockServer::builder().name("b").start().unwrap();

    // 1. Three sidecars, s3 through the relay; all connected, each sees all three.
    let s = [
        Sidecar::start(&sidecar_config(&nats.url(), "s1", &a, &b, "")),
        Sidecar::start(&sidecar_config(&nats.url(), "s2", &a, &b, "")),
        Sidecar::start(&sidecar_config(&relay.nats_url(), "s3", &a, &b, "")),
    ];
    wait_connected(&s, 3);
    assert!(
        relay.forwarded() >= 1 && relay.open() >= 1,
        "s3 is not behind the relay"
    );
    let all: Vec<&Sidecar> = s.iter().collect();
    let [s1, s2, s3] = [&s[0], &s[1], &s[2]];
    let users = treated_users(s1, 20);

    // 2. A rollback on s1 reaches all three.
    let t = Instant::now();
    s1.post("rollback");
    let took = wait_all(&all, "rolled_back", t, 5);
    println!("rollback on s1 applied on s1, s2, s3 after {took:?} ms");

    // 3. Cut s3 off: it notices, and keeps serving the rollback while the fleet resumes.
    let t_cut = Instant::now();
    relay.cut();
    let noticed = wait_for(20, "s3 to notice the cut", || {
        (!s3.connected()).then(|| t_cut.elapsed())
    });
    println!("s3 saw the cut after {} ms", noticed.as_millis());
    assert!(s1.connected() && s2.connected());

    let t = Instant::now();
    s1.post("resume");
    let took = wait_all(&[s1, s2], "running", t, 5);
    println!("resume on s1 (s3 cut off) applied on s1, s2 after {took:?} ms");
    served_as(s1, &users[..5], "treatment");
    let before = b.requests();
    // s3 serves its last known decision: every treated user gets control, with a 200,
    // for as long as the others hold the resume.
    for _ in 0..5 {
        served_as(s3, &users, "control");
        assert_eq!(s3.state(), "rolled_back");
        assert!(!s3.connected());
    }
    assert_eq!(
        b.requests(),
        before,
        "s3 sent a rolled-back treatment to its backend"
    );
    assert_eq!(
        (s1.state(), s2.state()),
        ("running".into(), "running".into())
    );

    // 4. Cut off, s3 takes its own decision: held there at once, kept pending.
    s3.post("pause");
    assert_eq!(s3.state(), "paused");
    let pending = wait_for(5, "s3's pending pause in fleet.json", || {
        let f = s3.fleet_file();
        let p = f.pointer(&format!("/pending/{KEY}"))?;
        Some(p.clone())
    });
    assert_eq!(pending["decision"]["action"], "pause", "{pending}");
    assert_eq!(pending["announced"], true, "{pending}");
    wait_for(5, "s3's pause event while cut off", || {
        let ev = s3.guardrail_events();
        (ev.len() == 1 && ev[0]["action"] == "pause").then_some(())
    });
    assert!(s3
        .g
        .logs()
        .contains("it holds here and is published when the broker is back"));
    served_as(s3, &users[..5], "control");
    // It stays there: s3 keeps trying to reconnect and is refused, the others run on.
    // Six refused attempts take about 3 s of the client's growing backoff (from 50 ms,
    // doubling), so the restore below meets a backoff of seconds, as in a real outage.
    wait_for(30, "s3's reconnect attempts through the cut relay", || {
        (relay.refused() >= 6).then_some(())
    });
    assert_eq!(
        (s1.state(), s2.state()),
        ("running".into(), "running".into())
    );
    assert_eq!(s3.state(), "paused");
    assert_eq!(
        history(&nats, KEY).len(),
        2,
        "nothing of s3 reached the bucket"
    );

    // 5. Restore: s3 reconnects and catches up. The fleet's resume (gen 2) was decided
    // after the rollback s3 holds, s3's pause after that resume: by `ts`, the later
    // decision wins, so the pause is published over the resume and all three pause.
    let refusals = relay.refusals();
    let cut_for = t_cut.elapsed();
    let t_restore = Instant::now();
    relay.restore();
    let reconnected = wait_for(30, "s3 to reconnect", || {
        s3.connected().then(|| t_restore.elapsed())
    });
    let published = wait_for(30, "s3's pending pause to be published", || {
        s3.fleet_file()["pending"]
            .as_object()
            .is_some_and(|p| p.is_empty())
            .then(|| t_restore.elapsed())
    });
    let took = wait_all(&[s1, s2], "paused", t_restore, 30);
    assert_eq!(s3.state(), "paused");
    println!(
        "cut for {} ms; s3's last {} reconnect attempts while cut came {:?} ms apart, the last {} ms before the restore",
        cut_for.as_millis(),
        refusals.len(),
        gaps_ms(&refusals),
        refusals
            .last()
            .map_or(0, |l| t_restore.duration_since(*l).as_millis())
    );
    println!(
        "after the restore: s3 reconnected in {} ms, published its pause at {} ms; s1, s2 paused at {took:?} ms",
        reconnected.as_millis(),
        published.as_millis()
    );
    for side in &s {
        served_as(side, &users[..5], "control");
    }
    assert_eq!(
        b.requests(),
        before,
        "a treated user reached the treatment while paused"
    );

    // 6. The bucket's history: one value per step, generations increasing, each a
    // later decision than the one before.
    let h = timed_history(&nats, KEY);
    let steps: Vec<(u64, &str, &str)> = h
        .iter()
        .map(|(g, a, i, _)| (*g, a.as_str(), i.as_str()))
        .collect();
    println!("bucket history of {KEY} (generation, action, taker): {steps:?}");
    assert_eq!(
        steps,
        vec![
            (1, "manual_rollback", "s1"),
            (2, "resume", "s1"),
            (3, "pause", "s3")
        ]
    );
    let ts: Vec<SystemTime> = h.iter().map(|(_, _, _, ts)| *ts).collect();
    assert!(
        ts.windows(2).all(|w| w[0] < w[1]),
        "ts not increasing: {ts:?}"
    );
    // Every sidecar knows the newest revision, and applied it (s3 took it).
    for side in &s {
        wait_for(10, "every sidecar to know generation 3", || {
            (side
                .fleet_file()
                .pointer(&format!("/known/{KEY}/value/generation"))
                == Some(&Value::from(3)))
            .then_some(())
        });
    }
    // One `guardrail` event per decision, written by its taker only.
    wait_for(5, "the takers' events", || {
        (s1.guardrail_events().len() == 2).then_some(())
    });
    let actions = |side: &Sidecar| -> Vec<String> {
        side.guardrail_events()
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(actions(s1), ["manual_rollback", "resume"]);
    assert!(actions(s2).is_empty());
    assert_eq!(actions(s3), ["pause"]);

    // Underneath the pause, the fleet's treatment is not rolled back (the resume came
    // after the rollback): s3 applied the fleet's resume before writing its pause over
    // it, so it holds the same state as the others.
    let flags: Vec<bool> = s.iter().map(Sidecar::treatment_rolled_back).collect();
    assert_eq!(
        flags,
        [false, false, false],
        "treatment `rolled_back` under the pause on s1, s2, s3; s3's treatment: {}",
        s3.experiment()["variants"][1]
    );

    // 7. The fleet moves on as one: a resume on s2 is applied everywhere, and every
    // sidecar serves the treatment again.
    let t = Instant::now();
    s2.post("resume");
    let took = wait_all(&all, "running", t, 5);
    println!("resume on s2 applied on s1, s2, s3 after {took:?} ms");
    for side in &s {
        assert!(!side.treatment_rolled_back());
        served_as(side, &users[..5], "treatment");
    }
    assert_eq!(b.requests(), before + 15);
    let h = timed_history(&nats, KEY);
    assert_eq!(
        h.last().map(|(g, a, i, _)| (*g, a.as_str(), i.as_str())),
        Some((4, "resume", "s2")),
        "{h:?}"
    );
}

/// A network that drops packets without a reset: the client's own pings never fire
/// while the sidecar keeps writing its heartbeats, so only abgate's rule notices —
/// three heartbeats in a row unanswered remake the connection. The sidecar reports
/// itself disconnected within seconds, and connects again once the path is back.
#[test]
fn a_connection_that_silently_drops_everything_is_noticed_and_made_again() {
    let nats = NatsServer::start();
    let relay = Relay::start(&format!("127.0.0.1:{}", nats.port));
    let a = MockServer::builder().name("a").start().unwrap();
    let b = MockServer::builder().name("b").start().unwrap();
    let s = [Sidecar::start(&sidecar_config(
        &relay.nats_url(),
        "s1",
        &a,
        &b,
        "",
    ))];
    wait_connected(&s, 1);
    let connected = || s[0].fleet()["connected"] == true;
    let t = Instant::now();
    relay.black_hole();
    wait_for(30, "the sidecar to see the dead connection", || {
        (!connected()).then_some(())
    });
    let noticed = t.elapsed();
    assert!(s[0]
        .g
        .logs()
        .contains("has not answered 3 heartbeats in a row"));
    // Requests never wait on the broker meanwhile.
    assert_eq!(get_as(&s[0].g, "/v1/chat", "u1").0, 200);
    let t = Instant::now();
    relay.restore();
    wait_for(30, "the sidecar to connect again", || {
        connected().then_some(())
    });
    println!(
        "black hole noticed after {} ms; connected again {} ms after the restore",
        noticed.as_millis(),
        t.elapsed().as_millis()
    );
}
