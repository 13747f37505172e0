//! Upstream health over real processes: an HTTP health check takes a failing address out
//! of its pool (admin API, gauge), it gets no traffic while out, and it gets traffic again
//! once it recovers.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A keep-alive HTTP/1.1 backend: `/health` answers 200 or 503 as `healthy` says, every
/// other path 200 with the backend's name. Counts both.
struct FlipBackend {
    addr: String,
    healthy: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    checks: Arc<AtomicUsize>,
}

impl FlipBackend {
    fn start(name: &'static str) -> FlipBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = FlipBackend {
            addr: listener.local_addr().unwrap().to_string(),
            healthy: Arc::new(AtomicBool::new(true)),
            served: Arc::default(),
            checks: Arc::default(),
        };
        let (healthy, served, checks) = (b.healthy.clone(), b.served.clone(), b.checks.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let (healthy, served, checks) = (healthy.clone(), served.clone(), checks.clone());
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            match conn.read(&mut chunk) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end);
                        let len: usize = head
                            .to_ascii_lowercase()
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        while buf.len() < len {
                            match conn.read(&mut chunk) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..len);
                        let path = head.split(' ').nth(1).unwrap_or("");
                        let (status, body) = if path == "/health" {
                            checks.fetch_add(1, SeqCst);
                            if healthy.load(SeqCst) {
                                ("200 OK", "ok")
                            } else {
                                ("503 Service Unavailable", "down")
                            }
                        } else {
                            served.fetch_add(1, SeqCst);
                            ("200 OK", name)
                        };
                        let reply = format!(
                            "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if conn.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        b
    }
}

/// `healthy` of `addr` in upstream `model`, per `GET /admin/upstreams`.
fn admin_healthy(g: &Abgate, addr: &str) -> Option<bool> {
    let v: serde_json::Value = agent()
        .get(&g.admin_url("/admin/upstreams"))
        .call()
        .ok()?
        .into_json()
        .ok()?;
    let up = v["upstreams"]
        .as_array()?
        .iter()
        .find(|u| u["name"] == "model")?;
    up["addrs"].as_array()?.iter().find(|a| a["addr"] == addr)?["healthy"].as_bool()
}

fn gauge(g: &Abgate, addr: &str) -> f64 {
    metric_sum(
        &g.metrics(),
        "abgate_upstream_healthy",
        &["upstream=\"model\"", &format!("addr=\"{addr}\"")],
    )
}

/// Poll until `addr` is `healthy` in both the admin API and the gauge; the time it took.
fn wait_health(g: &Abgate, addr: &str, healthy: bool, within: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let gauge_ok = gauge(g, addr) == if healthy { 1.0 } else { 0.0 };
        if admin_healthy(g, addr) == Some(healthy) && gauge_ok {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < within,
            "{addr} not healthy={healthy} within {within:?}; admin says {:?}, gauge {}\n{}",
            admin_healthy(g, addr),
            gauge(g, addr),
            g.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The backend names that answered `n` requests, counted.
fn spread(g: &Abgate, n: usize) -> (usize, usize) {
    let (mut a, mut b) = (0, 0);
    for _ in 0..n {
        let body = agent()
            .get(&g.url("/v1/predict"))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        match body.as_str() {
            "a" => a += 1,
            "b" => b += 1,
            other => panic!("unexpected body {other:?}"),
        }
    }
    (a, b)
}

#[test]
fn a_failing_health_check_takes_an_address_out_until_it_recovers() {
    let a = FlipBackend::start("a");
    let b = FlipBackend::start("b");
    let dir = tempfile::tempdir().unwrap();
    let path = TestConfig::new(dir.path())
        .upstream_with(
            "model",
            &[&a.addr, &b.addr],
            &[r#"health_check = { path = "/health", interval = "200ms", expect = [200], failures = 2 }"#],
        )
        .write(dir.path());
    let g = start_file(dir.path(), &path);

    // Both start healthy and share the traffic.
    wait_health(&g, &a.addr, true, Duration::from_secs(5));
    wait_health(&g, &b.addr, true, Duration::from_secs(5));
    let (to_a, to_b) = spread(&g, 20);
    assert!(to_a > 0 && to_b > 0, "both healthy: a {to_a}, b {to_b}");
    eprintln!("both healthy: a {to_a}, b {to_b}");

    // b fails its check: out within failures × interval (400 ms) plus slack.
    b.healthy.store(false, SeqCst);
    let took = wait_health(&g, &b.addr, false, Duration::from_secs(3));
    eprintln!("b out after {took:?}");
    assert!(admin_healthy(&g, &a.addr) == Some(true));
    assert_eq!(gauge(&g, &a.addr), 1.0);

    // While it is out, every request reaches a.
    let served_b = b.served.load(SeqCst);
    let (to_a, to_b) = spread(&g, 30);
    assert_eq!((to_a, to_b), (30, 0));
    assert_eq!(b.served.load(SeqCst), served_b);
    // The checks go on (that is how it comes back).
    let checks = b.checks.load(SeqCst);
    wait_for(5, "another health check of b", || {
        (b.checks.load(SeqCst) > checks).then_some(())
    });

    // b recovers: back within failures × interval plus slack, and gets traffic again.
    b.healthy.store(true, SeqCst);
    let took = wait_health(&g, &b.addr, true, Duration::from_secs(3));
    eprintln!("b back after {took:?}");
    let (to_a, to_b) = spread(&g, 20);
    eprintln!("after recovery: a {to_a}, b {to_b}");
    assert!(to_b > 0 && to_a > 0, "after recovery: a {to_a}, b {to_b}");

    let logs = g.logs();
    // One readable line per change of state, naming upstream and address (never
    // pingora's debug dump of the peer, ~1,500 characters per address).
    let down = format!(
        "upstream `model` address {} (`{}`) becomes unhealthy",
        b.addr, b.addr
    );
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains(&down)).collect();
    assert_eq!(lines.len(), 1, "{logs}");
    eprintln!("{}", lines[0]);
    assert!(lines[0].len() < 400, "{}", lines[0]);
    assert!(!logs.contains("BasicPeer"), "{logs}");
    assert!(
        logs.contains(&format!(
            "upstream `model` address {} (`{}`) becomes healthy",
            b.addr, b.addr
        )),
        "{logs}"
    );
    g.stop();
}
