//! Protocols in front of real model servers, with real processes on loopback: retries
//! that succeed are not errors, `Host` and `X-Forwarded-*` as configured, gRPC over h2c
//! and TLS, server-sent-event streams that arrive as they are sent and fail loudly,
//! WebSockets across silences, and TLS listeners and backends that verify certificates.

mod common;

use common::config::TestConfig;
use common::*;

/// A retried request that then succeeds counts once, as a success, with one retry and
/// no error: in the exposure, the request metrics and the upstream error counters.
#[test]
fn a_request_that_succeeds_after_a_retry_is_one_success_and_one_retry() {
    // The backend answers the first request of each connection and closes the next one
    // unanswered; one proxy thread, so the second request reuses the pooled connection,
    // finds it closed, and pingora retries it on a fresh one.
    let backend = RawBackend::start_answering(1);
    let dir = tempfile::tempdir().unwrap();
    let config = TestConfig::new(dir.path())
        .server("threads = 1")
        .upstream("m", &[&backend.addr])
        .toml();
    let g = start(dir.path(), &config);
    for _ in 0..2 {
        let r = agent().get(&g.url("/v1/predict")).call().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.into_string().unwrap(), "ok");
    }
    // Three requests reached the backend: two answered, one dropped and retried.
    for _ in 0..3 {
        backend.next_head();
    }
    let m = wait_metric(&g, "abgate_proxied_requests_total", &["2xx"], 2.0);
    assert_eq!(
        metric_sum(&m, "abgate_upstream_retries_total", &["upstream=\"m\""]),
        1.0
    );
    assert_eq!(
        metric_sum(&m, "abgate_upstream_errors_total", &[]),
        0.0,
        "{m}"
    );
    let exposures = wait_for(10, "two exposures", || {
        let e = events(&dir.path().join("events"));
        (e.len() >= 2).then_some(e)
    });
    for e in &exposures {
        assert_eq!(e["status"], 200);
        assert_eq!(e["error"], serde_json::Value::Null, "{e}");
    }
}

/// `host` replaces the client's `Host`; `server.forwarded` appends the client's address
/// to the `X-Forwarded-For` that arrived and sets `X-Forwarded-Proto` unless it arrived.
#[test]
fn host_and_forwarded_headers_reach_the_backend_as_configured() {
    let backend = RawBackend::start();
    let dir = tempfile::tempdir().unwrap();
    let config = TestConfig::new(dir.path())
        .server("forwarded = true")
        .upstream_with(
            "m",
            &[&backend.addr],
            &["host = \"model-b.default.example.com\""],
        )
        .toml();
    let g = start(dir.path(), &config);
    let head = |extra: &str| {
        let req = format!(
            "GET /v1/x HTTP/1.1\r\nHost: public.example\r\n{extra}Connection: close\r\n\r\n"
        );
        let resp = raw_request(&g.proxy, req.as_bytes());
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        String::from_utf8(backend.next_head())
            .unwrap()
            .to_ascii_lowercase()
    };
    let plain = head("");
    assert!(
        plain.contains("\r\nhost: model-b.default.example.com\r\n"),
        "{plain}"
    );
    assert!(!plain.contains("public.example"), "{plain}");
    assert!(
        plain.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
        "{plain}"
    );
    assert!(plain.contains("\r\nx-forwarded-proto: http\r\n"), "{plain}");
    let chained = head("X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n");
    assert!(
        chained.contains("\r\nx-forwarded-for: 203.0.113.7, 127.0.0.1\r\n"),
        "{chained}"
    );
    assert!(
        chained.contains("\r\nx-forwarded-proto: https\r\n"),
        "{chained}"
    );
    assert_eq!(chained.matches("x-forwarded-proto").count(), 1, "{chained}");
    drop(g);

    // Without `forwarded`, nothing is added and the client's Host goes through.
    let dir = tempfile::tempdir().unwrap();
    let config = TestConfig::new(dir.path())
        .upstream("m", &[&backend.addr])
        .toml();
    let g = start(dir.path(), &config);
    let req = b"GET /v1/x HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n";
    assert!(raw_request(&g.proxy, req).starts_with("HTTP/1.1 200"));
    let head = String::from_utf8(backend.next_head())
        .unwrap()
        .to_ascii_lowercase();
    assert!(head.contains("\r\nhost: public.example\r\n"), "{head}");
    assert!(!head.contains("x-forwarded"), "{head}");
}

// ---------------------------------------------------------------- gRPC

use abgate::mock::grpc::MockGrpcServer;
use common::config::{ExperimentSpec, LayerSpec};
use std::time::{Duration, Instant};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Two backends behind one routing experiment, each upstream with `extra` lines.
fn routed(
    dir: &std::path::Path,
    a: impl std::fmt::Display,
    b: impl std::fmt::Display,
    extra: &[&str],
) -> TestConfig {
    TestConfig::new(dir)
        .identity("header = \"x-user-id\"")
        .upstream_with("model_a", &[a], extra)
        .upstream_with("model_b", &[b], extra)
        .layer(
            LayerSpec::new("model").experiment(
                ExperimentSpec::new("ranker_v2", 1.0)
                    .variant_with("control", 50.0, Some("model_a"), &[])
                    .variant_with("treatment", 50.0, Some("model_b"), &[]),
            ),
        )
}

/// A plaintext (h2c) gRPC channel to `addr`.
async fn h2c_channel(addr: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A Check call as user `user`: (the backend's name from the response metadata, the
/// assignments the backend saw) or the gRPC status.
async fn check_as(
    client: &mut HealthClient<tonic::transport::Channel>,
    user: &str,
) -> Result<(String, String), tonic::Status> {
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    req.metadata_mut()
        .insert("x-user-id", user.parse().unwrap());
    let resp = client.check(req).await?;
    let meta = resp.metadata().clone();
    assert_eq!(resp.into_inner().status, ServingStatus::Serving as i32);
    let text = |k: &str| {
        meta.get(k)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    Ok((text("x-backend"), text("x-seen-assignments")))
}

/// gRPC through abgate over h2c: each variant's calls reach its own backend, sticky per
/// user (identity read from gRPC metadata); a server-streaming call arrives whole with
/// its trailers; a client deadline ends a call the backend is too slow for.
#[test]
fn grpc_over_h2c_routes_variants_to_their_backends_with_streams_trailers_and_deadlines() {
    let a = MockGrpcServer::builder().name("a").start().unwrap();
    let b = MockGrpcServer::builder().name("b").start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = routed(dir.path(), a.addr, b.addr, &["protocol = \"h2c\""]);
    let cfg = config.parse();
    let g = start(dir.path(), &config.toml());
    let exp = &cfg.layers[0].experiments[0];
    runtime().block_on(async {
        let mut client = HealthClient::new(h2c_channel(&g.proxy).await);
        let mut seen = [0usize; 2];
        for i in 0..40 {
            let user = format!("grpc-user-{i}");
            let variant = abgate::assign::variant_of(exp, &user);
            let (backend, assignments) = check_as(&mut client, &user).await.unwrap();
            assert_eq!(backend, ["a", "b"][variant], "user {user}");
            assert!(assignments.contains("ranker_v2"), "{assignments}");
            // Sticky: the same user again reaches the same backend.
            assert_eq!(check_as(&mut client, &user).await.unwrap().0, backend);
            seen[variant] += 1;
        }
        assert!(seen[0] > 5 && seen[1] > 5, "{seen:?}");

        // Server streaming: every message, then the OK status from the trailers.
        let mut req = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        req.metadata_mut()
            .insert("x-user-id", "grpc-user-0".parse().unwrap());
        req.metadata_mut()
            .insert("x-stream-n", "5".parse().unwrap());
        req.metadata_mut()
            .insert("x-stream-interval-ms", "10".parse().unwrap());
        let mut stream = client.watch(req).await.unwrap().into_inner();
        let mut n = 0;
        while let Some(msg) = stream.message().await.unwrap() {
            assert_eq!(msg.status, ServingStatus::Serving as i32);
            n += 1;
        }
        assert_eq!(n, 5);

        // A deadline shorter than the backend's answer ends the call in time.
        let mut req = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        req.metadata_mut()
            .insert("x-user-id", "grpc-user-0".parse().unwrap());
        req.metadata_mut()
            .insert("x-sleep-ms", "3000".parse().unwrap());
        req.set_timeout(Duration::from_millis(200));
        let started = Instant::now();
        let err = client.check(req).await.unwrap_err();
        assert!(
            matches!(
                err.code(),
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ),
            "{err:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    });
    // Exposures carry the gRPC status of each call (0: OK) and no error.
    let exposures = wait_for(10, "the exposures of 81 calls", || {
        let e = events(&dir.path().join("events"));
        (e.iter().filter(|e| e["type"] == "exposure").count() >= 81).then_some(e)
    });
    let ok: Vec<_> = exposures
        .iter()
        .filter(|e| e["type"] == "exposure" && e["grpc_status"] == 0)
        .collect();
    assert_eq!(ok.len(), 81, "80 checks and the stream");
    assert!(ok
        .iter()
        .all(|e| e["error"].is_null() && e["status"] == 200));
}

/// A gRPC call abgate cannot deliver gets a gRPC answer a gRPC client can read
/// (UNAVAILABLE with abgate's message), not a JSON 502 it fails to parse.
#[test]
fn a_grpc_call_abgate_cannot_deliver_gets_unavailable_with_the_reason() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let config = TestConfig::new(dir.path())
        .upstream_with("m", &[addr], &["protocol = \"h2c\""])
        .toml();
    let g = start(dir.path(), &config);
    let status = runtime().block_on(async {
        let mut client = HealthClient::new(h2c_channel(&g.proxy).await);
        check_as(&mut client, "u").await.unwrap_err()
    });
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .contains("abgate: upstream `m` failed (connect)"),
        "{status:?}"
    );
    let e = wait_for(10, "the exposure", || {
        events(&dir.path().join("events")).pop()
    });
    assert_eq!(
        (e["status"].as_u64(), e["grpc_status"].as_u64()),
        (Some(200), Some(14)),
        "{e}"
    );
    assert_eq!(e["error"], "connect");
}

/// A backend that answers UNAVAILABLE (grpc-status 14, HTTP 200) is an error of its
/// variant, counted and rolled back by the guardrail like a 5xx backend.
#[test]
fn a_grpc_backend_answering_unavailable_is_rolled_back_by_the_guardrail() {
    let a = MockGrpcServer::builder().name("a").start().unwrap();
    let b = MockGrpcServer::builder().name("b").start().unwrap();
    b.set_unavailable(true);
    let dir = tempfile::tempdir().unwrap();
    let config = routed(dir.path(), a.addr, b.addr, &["protocol = \"h2c\""]).guardrails(
        "ranker_v2",
        r#"min_requests = 50, check_interval = "100ms", window = "1m", error_rate = { max_increase = 0.02 }"#,
    );
    let g = start(dir.path(), &config.toml());
    let rt = runtime();
    let mut client = HealthClient::new(rt.block_on(h2c_channel(&g.proxy)));
    let mut round = 0;
    wait_for(60, "the treatment rolled back", || {
        rt.block_on(async {
            for i in 0..100 {
                let _ = check_as(&mut client, &format!("u{round}-{i}")).await;
            }
        });
        round += 1;
        let v: serde_json::Value = agent()
            .get(&g.admin_url("/admin/experiments"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        (v["experiments"][0]["state"] == "rolled_back").then_some(())
    });
    let m = g.metrics();
    assert!(
        metric_sum(
            &m,
            "abgate_upstream_errors_total",
            &["upstream=\"model_b\"", "kind=\"grpc\""]
        ) >= 50.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(
            &m,
            "abgate_upstream_errors_total",
            &["upstream=\"model_a\""]
        ),
        0.0
    );
    // After the rollback every call reaches the healthy control backend.
    rt.block_on(async {
        for i in 0..20 {
            let (backend, _) = check_as(&mut client, &format!("after-{i}")).await.unwrap();
            assert_eq!(backend, "a");
        }
    });
    let failed: Vec<_> = events(&dir.path().join("events"))
        .into_iter()
        .filter(|e| e["type"] == "exposure" && e["error"] == "grpc")
        .collect();
    assert!(failed.len() >= 50);
    assert!(failed
        .iter()
        .all(|e| e["grpc_status"] == 14 && e["status"] == 200 && e["upstream"] == "model_b"));
}

// ---------------------------------------------------------------- streams

use abgate::mock::MockServer;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// What a streaming client saw: when each server-sent event arrived (from the request),
/// and whether the body ended cleanly.
struct Streamed {
    arrivals: Vec<Duration>,
    end: Result<(), String>,
}

async fn stream_events(url: &str, h2: bool) -> Streamed {
    let mut builder = Client::builder(TokioExecutor::new());
    builder.http2_only(h2);
    let client = builder.build_http::<http_body_util::Empty<bytes::Bytes>>();
    let start = Instant::now();
    let resp = client.get(url.parse().unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut arrivals = Vec::new();
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    let n = String::from_utf8_lossy(d).matches("data:").count();
                    arrivals.extend(std::iter::repeat_n(start.elapsed(), n));
                }
            }
            Some(Err(e)) => {
                return Streamed {
                    arrivals,
                    end: Err(e.to_string()),
                }
            }
            None => {
                return Streamed {
                    arrivals,
                    end: Ok(()),
                }
            }
        }
    }
}

fn gaps(a: &[Duration]) -> Vec<f64> {
    a.windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0)
        .collect()
}

/// Server-sent events pass through as they are sent: the gaps between events through
/// abgate are the backend's, and `ttfb_ms` is the first token's time, not the answer's
/// length, over HTTP/1.1 and h2c alike.
#[test]
fn sse_events_arrive_as_sent_and_ttfb_is_the_first_token() {
    let mock = MockServer::builder().name("llm").start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = TestConfig::new(dir.path())
        .upstream("m", &[mock.addr])
        .toml();
    let g = start(dir.path(), &config);
    let path = "/v1/chat/completions?stream=6&interval_ms=80";
    let rt = runtime();
    let direct = rt.block_on(stream_events(&format!("http://{}{path}", mock.addr), false));
    for h2 in [false, true] {
        let through = rt.block_on(stream_events(&format!("http://{}{path}", g.proxy), h2));
        assert!(through.end.is_ok() && direct.end.is_ok());
        assert_eq!(through.arrivals.len(), 6);
        // Each gap within 30 ms of the backend's own (80 ms apart): nothing is buffered.
        for (t, d) in gaps(&through.arrivals).iter().zip(gaps(&direct.arrivals)) {
            assert!(
                (t - d).abs() < 30.0,
                "h2={h2}: gaps {:?} vs direct {:?}",
                gaps(&through.arrivals),
                gaps(&direct.arrivals)
            );
        }
    }
    let exposures = wait_for(10, "two exposures", || {
        let e = events(&dir.path().join("events"));
        (e.len() >= 2).then_some(e)
    });
    for e in exposures {
        let (ttfb, total) = (
            e["ttfb_ms"].as_f64().unwrap(),
            e["latency_ms"].as_f64().unwrap(),
        );
        // The first event leaves the backend 80 ms after the request; the last 480 ms.
        assert!((80.0..110.0).contains(&ttfb), "ttfb_ms {ttfb} in {e}");
        assert!(total >= 480.0, "latency_ms {total} in {e}");
        assert!(e["error"].is_null());
    }
    let m = wait_metric(&g, "abgate_request_ttfb_seconds_count", &[], 2.0);
    assert_eq!(
        metric_sum(&m, "abgate_request_ttfb_seconds_bucket", &["le=\"0.05\""]),
        0.0
    );
    assert_eq!(
        metric_sum(&m, "abgate_request_ttfb_seconds_bucket", &["le=\"0.25\""]),
        2.0
    );
}

/// A backend that fails after 3 of 6 events: the client's response is aborted (no final
/// chunk over HTTP/1.1, a reset stream over HTTP/2), so a standard client reports an
/// incomplete body instead of a short answer; the exposure records status 200 and the
/// error.
#[test]
fn a_stream_that_fails_midway_looks_failed_to_http1_and_http2_clients() {
    let mock = MockServer::builder().name("llm").start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = TestConfig::new(dir.path())
        .upstream("m", &[mock.addr])
        .toml();
    let g = start(dir.path(), &config);
    let path = "/v1/chat/completions?stream=6&interval_ms=20&fail_after=3";
    let rt = runtime();
    for h2 in [false, true] {
        let s = rt.block_on(stream_events(&format!("http://{}{path}", g.proxy), h2));
        if h2 {
            // RST_STREAM discards DATA frames the connection has not flushed yet
            // (docs/protocols.md says so): the client may see fewer, never more.
            assert!(
                (1..=3).contains(&s.arrivals.len()),
                "h2: {}",
                s.arrivals.len()
            );
        } else {
            assert_eq!(s.arrivals.len(), 3, "h1");
        }
        assert!(
            s.end.is_err(),
            "h2={h2}: the truncated stream ended cleanly"
        );
    }
    // curl, a client nobody here wrote, reports the truncation with its own exit codes:
    // 18 (partial file: the chunked body ended early) and, over h2c, 92 (the HTTP/2
    // stream was not closed cleanly); the complete stream exits 0.
    let curl = |args: &[&str], path: &str| {
        std::process::Command::new("curl")
            .args(["-sS", "-N", "--max-time", "10"])
            .args(args)
            .arg(format!("http://{}{path}", g.proxy))
            .output()
            .expect("curl runs")
    };
    let whole = "/v1/chat/completions?stream=3&interval_ms=10";
    for (args, truncated_exit) in [(&[][..], 18), (&["--http2-prior-knowledge"][..], 92)] {
        let ok = curl(args, whole);
        assert_eq!(
            ok.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
        let cut = curl(args, path);
        assert_eq!(
            cut.status.code(),
            Some(truncated_exit),
            "{args:?}: {}",
            String::from_utf8_lossy(&cut.stderr)
        );
        assert!(
            String::from_utf8_lossy(&cut.stdout)
                .matches("data:")
                .count()
                <= 3
        );
    }
    // On the wire (HTTP/1.1): three events, then the connection closes without `0\r\n\r\n`.
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(&g.proxy).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(
        raw.contains("transfer-encoding: chunked") || raw.contains("Transfer-Encoding: chunked"),
        "{raw}"
    );
    assert_eq!(raw.matches("data:").count(), 3, "{raw}");
    assert!(!raw.ends_with("0\r\n\r\n"), "a final chunk was sent: {raw}");
    assert!(
        !raw.contains("abgate: upstream"),
        "an error body was appended: {raw}"
    );
    let exposures = wait_for(10, "seven exposures", || {
        let e = events(&dir.path().join("events"));
        (e.len() >= 7).then_some(e)
    });
    let failed: Vec<_> = exposures.iter().filter(|e| !e["error"].is_null()).collect();
    assert_eq!(
        failed.len(),
        5,
        "2 hyper, 2 curl and 1 raw truncated streams"
    );
    for e in failed {
        assert_eq!(e["status"], 200, "{e}");
        assert_eq!(e["error"], "reset", "{e}");
    }
}

/// `read_timeout` bounds only the wait for the header and `idle_timeout` the silences
/// after it: a stream with 400 ms between events completes under `read_timeout = 300ms`
/// with `idle_timeout = 5s`, and a backend that sends no header for 3 s gets a 504 after
/// `read_timeout`.
#[test]
fn read_timeout_bounds_the_header_and_idle_timeout_the_silences_inside_a_stream() {
    let mock = MockServer::builder().name("llm").start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = TestConfig::new(dir.path())
        .upstream_with(
            "m",
            &[mock.addr],
            &["read_timeout = \"300ms\"", "idle_timeout = \"5s\""],
        )
        .toml();
    let g = start(dir.path(), &config);
    let rt = runtime();
    let s = rt.block_on(stream_events(
        &format!("http://{}/v1/c?stream=3&interval_ms=400", g.proxy),
        false,
    ));
    assert_eq!(s.arrivals.len(), 3);
    assert!(s.end.is_ok(), "{:?}", s.end);
    let started = Instant::now();
    let r = agent().get(&g.url("/v1/c?stall_ms=3000")).call();
    let elapsed = started.elapsed();
    match r {
        Err(ureq::Error::Status(504, _)) => {}
        other => panic!("expected 504, got {other:?}"),
    }
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(2500),
        "{elapsed:?}"
    );
    let m = wait_metric(
        &g,
        "abgate_upstream_errors_total",
        &["kind=\"timeout\""],
        1.0,
    );
    assert_eq!(metric_sum(&m, "abgate_upstream_errors_total", &[]), 1.0);
}

// ---------------------------------------------------------------- WebSocket

/// A WebSocket stays open across a silence longer than `read_timeout` and shorter than
/// `idle_timeout`; without `idle_timeout` (it defaults to `read_timeout`) the same
/// silence closes it.
#[test]
fn a_websocket_survives_a_silence_shorter_than_idle_timeout() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mock = MockServer::builder().name("ws").start().unwrap();
    let rt = runtime();
    for (idle, survives) in [(Some("5s"), true), (None, false)] {
        let dir = tempfile::tempdir().unwrap();
        let mut extra = vec!["read_timeout = \"300ms\""];
        let line;
        if let Some(i) = idle {
            line = format!("idle_timeout = \"{i}\"");
            extra.push(&line);
        }
        let config = TestConfig::new(dir.path())
            .upstream_with("m", &[mock.addr], &extra)
            .toml();
        let g = start(dir.path(), &config);
        rt.block_on(async {
            // A known pingora 0.9 race resets an upgraded connection right after the 101
            // now and then (about 1 in 20 here: the request's empty body is finished
            // toward the backend before the upgrade is seen; docs/protocols.md, known
            // issues). It is not what this test is about: connect again, at most twice.
            let mut attempts = 0;
            let mut ws = loop {
                attempts += 1;
                let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", g.proxy))
                    .await
                    .unwrap();
                ws.send(Message::text("hello")).await.unwrap();
                match ws.next().await.unwrap() {
                    Ok(m) => {
                        assert_eq!(m, Message::text("hello"));
                        break ws;
                    }
                    Err(e) if attempts < 3 => eprintln!("first echo failed ({e}); again"),
                    Err(e) => panic!("first echo, idle_timeout = {idle:?}: {e}\n{}", g.logs()),
                }
            };
            // The silence under test: longer than read_timeout, shorter than idle_timeout.
            tokio::time::sleep(Duration::from_millis(1200)).await;
            let echoed = async {
                ws.send(Message::text("again")).await.ok()?;
                match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                    Ok(Some(Ok(m))) => Some(m),
                    _ => None,
                }
            }
            .await;
            if survives {
                assert_eq!(
                    echoed,
                    Some(Message::text("again")),
                    "idle_timeout = {idle:?}"
                );
            } else {
                assert_ne!(echoed, Some(Message::text("again")), "no idle_timeout");
            }
        });
    }
}

// ---------------------------------------------------------------- TLS

use abgate::mock::pki::TestPki;
use std::sync::Arc;
use tokio_rustls::rustls;

/// A TLS client that trusts only `ca` (PEM), offering `alpn`.
fn tls_connector(ca: &std::path::Path, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for c in rustls_pemfile::certs(&mut &pem[..]) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// GET `path` over TLS to `addr` (certificate checked for `localhost`), HTTP/2 when `h2`:
/// (the protocol ALPN chose, status, body).
async fn tls_get(
    addr: &str,
    ca: &std::path::Path,
    h2: bool,
    path: &str,
) -> Result<(Vec<u8>, u16, String), String> {
    let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tls_connector(ca, alpn)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let chosen = tls.get_ref().1.alpn_protocol().unwrap_or_default().to_vec();
    let io = hyper_util::rt::TokioIo::new(tls);
    let req = http::Request::get(format!("https://localhost{path}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    };
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((chosen, status, String::from_utf8_lossy(&body).into_owned()))
}

/// The TLS listener serves HTTP/1.1 and h2 (by ALPN) to clients that verify its
/// certificate against the test CA; a client trusting another CA is refused.
#[test]
fn the_tls_listener_serves_http1_and_h2_to_clients_that_verify_it() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(pki_dir.path()).unwrap();
    let other = TestPki::generate_other_ca(pki_dir.path()).unwrap();
    let mock = MockServer::builder().name("m").start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = TestConfig::new(dir.path())
        .raw(&format!(
            "[server.tls]\nlisten = [\"127.0.0.1:0\"]\ncert = \"{}\"\nkey = \"{}\"\n",
            pki.cert.display(),
            pki.key.display()
        ))
        .upstream("m", &[mock.addr])
        .toml();
    let g = start(dir.path(), &config);
    let tls = g
        .tls
        .clone()
        .expect("the ready line names the TLS listener");
    let rt = runtime();
    for (h2, alpn) in [(false, &b"http/1.1"[..]), (true, &b"h2"[..])] {
        let (chosen, status, body) = rt.block_on(tls_get(&tls, &pki.ca, h2, "/v1/x")).unwrap();
        assert_eq!((chosen.as_slice(), status), (alpn, 200), "{body}");
        assert!(body.contains("\"backend\":\"m\""), "{body}");
    }
    let refused = rt.block_on(tls_get(&tls, &other.ca, false, "/v1/x"));
    assert!(
        refused.is_err(),
        "a client trusting another CA connected: {refused:?}"
    );
    // The plaintext listener still serves HTTP/1.1.
    assert_eq!(agent().get(&g.url("/v1/x")).call().unwrap().status(), 200);
}

/// TLS to backends: a certificate from the configured CA is accepted; one from an
/// unknown CA is refused (502, `connect`) with `verify = true`, and accepted only with
/// `verify = false`, which is logged.
#[test]
fn tls_backends_are_verified_against_the_configured_ca() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(pki_dir.path()).unwrap();
    let other = TestPki::generate_other_ca(pki_dir.path()).unwrap();
    let good = MockServer::builder()
        .name("good")
        .tls(pki.tls_files())
        .start()
        .unwrap();
    let rogue = MockServer::builder()
        .name("rogue")
        .tls(other.tls_files())
        .start()
        .unwrap();
    let ca = format!("ca = \"{}\"", pki.ca.display());
    // One abgate per backend and setting: (backend, extra upstream lines).
    let serve = |addr: std::net::SocketAddr, extra: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let mut lines = vec!["tls = true", ca.as_str()];
        lines.extend_from_slice(extra);
        let config = TestConfig::new(dir.path())
            .upstream_with("m", &[addr], &lines)
            .toml();
        let g = start(dir.path(), &config);
        let (status, body) = match agent().get(&g.url("/v1/x")).call() {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap()),
            Err(e) => panic!("{e}"),
        };
        (status, body, g, dir)
    };
    let (status, body, _g, _dir) = serve(good.addr, &[]);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"backend\":\"good\"") && body.contains("\"tls\":true"),
        "{body}"
    );
    let (status, body, _g, dir) = serve(rogue.addr, &[]);
    assert_eq!(status, 502, "{body}");
    assert_eq!(
        rogue.requests(),
        0,
        "a request reached the backend with the unknown CA"
    );
    let exposure = wait_for(10, "the exposure", || {
        events(&dir.path().join("events")).pop()
    });
    assert_eq!(exposure["error"], "connect", "{exposure}");
    let (status, body, g, _dir) = serve(rogue.addr, &["verify = false"]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"backend\":\"rogue\""), "{body}");
    let logs = g.logs();
    assert!(logs.contains("verify = false"), "{logs}");
}

/// gRPC over TLS end to end: a tonic client verifying the listener's certificate, h2 by
/// ALPN to abgate, and h2 over TLS to a gRPC backend verified against the test CA.
#[test]
fn grpc_over_tls_and_h2_end_to_end() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(pki_dir.path()).unwrap();
    let a = MockGrpcServer::builder()
        .name("a")
        .tls(pki.tls_files())
        .start()
        .unwrap();
    let b = MockGrpcServer::builder()
        .name("b")
        .tls(pki.tls_files())
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = format!("ca = \"{}\"", pki.ca.display());
    let config = routed(
        dir.path(),
        a.addr,
        b.addr,
        &["protocol = \"h2\"", "sni = \"localhost\"", &ca],
    )
    .raw(&format!(
        "[server.tls]\nlisten = [\"127.0.0.1:0\"]\ncert = \"{}\"\nkey = \"{}\"\n",
        pki.cert.display(),
        pki.key.display()
    ));
    let cfg = config.parse();
    let exp = &cfg.layers[0].experiments[0];
    let g = start(dir.path(), &config.toml());
    let port = g
        .tls
        .clone()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    runtime().block_on(async {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&pki.ca_pem))
            .domain_name("localhost");
        let channel = tonic::transport::Endpoint::from_shared(format!("https://localhost:{port}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);
        for i in 0..20 {
            let user = format!("tls-user-{i}");
            let (backend, _) = check_as(&mut client, &user).await.unwrap();
            assert_eq!(backend, ["a", "b"][abgate::assign::variant_of(exp, &user)]);
        }
    });
    assert!(a.calls() > 0 && b.calls() > 0);
}
