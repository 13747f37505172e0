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
