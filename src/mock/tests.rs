//! The HTTP mock over real loopback sockets: both protocols on one port, the query
//! behaviours, WebSocket echo and TLS.

use super::*;
use http_body_util::Empty;
use hyper::client::conn::{http1, http2};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every test's network part must finish by then.
const DEADLINE: Duration = Duration::from_secs(5);

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .expect("test deadline")
}

async fn h1_over<IO>(io: IO) -> http1::SendRequest<Empty<Bytes>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, conn) = http1::handshake(TokioIo::new(io)).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    tx
}

async fn h2_over<IO>(io: IO) -> http2::SendRequest<Empty<Bytes>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    tx
}

async fn tcp(addr: SocketAddr) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(addr).await.unwrap()
}

fn get(path_and_query: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("http://localhost{path_and_query}"))
        .header("x-abgate-assignments", "exp=treatment")
        .body(Empty::new())
        .unwrap()
}

async fn json(resp: Response<Incoming>) -> serde_json::Value {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn query_parameters_parse_and_bad_values_are_refused() {
    let q = Query::parse(Some(
        "stream=3&interval_ms=7&fail_after=1&stall_ms=2&status=503&x=y",
    ))
    .unwrap();
    assert_eq!(
        q,
        Query {
            status: Some(StatusCode::SERVICE_UNAVAILABLE),
            stall: Duration::from_millis(2),
            stream: Some(3),
            interval: Duration::from_millis(7),
            fail_after: Some(1),
        }
    );
    assert_eq!(Query::parse(None).unwrap(), Query::default());
    assert!(Query::parse(Some("stream=lots")).is_err());
    assert!(Query::parse(Some("status=99")).is_err());
    assert!(Query::parse(Some("status=101")).is_err());
    assert!(Query::parse(Some("status=1000")).is_err());
}

#[tokio::test]
async fn http1_and_h2c_prior_knowledge_share_the_port() {
    let mock = MockServer::builder().name("m").start().unwrap();
    within(async {
        let mut c1 = h1_over(tcp(mock.addr).await).await;
        let resp = c1
            .send_request(get("/v1/predict?status=201"))
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        assert_eq!(resp.headers()["x-mock-backend"], "m");
        let body = json(resp).await;
        assert_eq!(body["backend"], "m");
        assert_eq!(body["path"], "/v1/predict");
        assert_eq!(body["version"], "HTTP/1.1");
        assert_eq!(body["tls"], false);
        assert_eq!(body["assignments"], "exp=treatment");

        let mut c2 = h2_over(tcp(mock.addr).await).await;
        let resp = c2.send_request(get("/v1/predict")).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), Version::HTTP_2);
        let body = json(resp).await;
        assert_eq!(body["backend"], "m");
        assert_eq!(body["version"], "HTTP/2.0");

        let resp = c1.send_request(get("/?stream=x")).await.unwrap();
        assert_eq!(resp.status(), 400);
    })
    .await;
    assert_eq!(mock.requests(), 3);
    assert_eq!(mock.stats.http2.load(Relaxed), 1);
    assert_eq!(mock.stats.with_assignments.load(Relaxed), 3);
}

#[tokio::test]
async fn stall_delays_the_response_header() {
    let mock = MockServer::builder().start().unwrap();
    within(async {
        let mut c = h1_over(tcp(mock.addr).await).await;
        let t0 = Instant::now();
        let resp = c.send_request(get("/?stall_ms=150")).await.unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(150));
        assert_eq!(resp.status(), 200);
    })
    .await;
}

/// Reads the event stream of `resp`: (arrival, event) per DATA frame, then whether the
/// body ended with an error.
async fn events(resp: Response<Incoming>) -> (Vec<(Instant, serde_json::Value)>, bool) {
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(_) => return (out, true),
        };
        // (An h2 body ends with an empty DATA frame carrying END_STREAM.)
        let Some(data) = frame.into_data().ok().filter(|d| !d.is_empty()) else {
            continue;
        };
        let text = std::str::from_utf8(&data).unwrap();
        assert!(text.starts_with("data: {\"token\":"), "{text:?}");
        // One event per frame: the mock flushes each on its own.
        let event = text
            .strip_prefix("data: ")
            .and_then(|t| t.strip_suffix("\n\n"))
            .unwrap_or_else(|| panic!("not one event: {text:?}"));
        out.push((Instant::now(), serde_json::from_str(event).unwrap()));
    }
    (out, false)
}

#[tokio::test]
async fn stream_sends_n_events_spaced_by_the_interval_over_both_protocols() {
    let mock = MockServer::builder().name("s").start().unwrap();
    within(async {
        let interval = Duration::from_millis(40);
        for h2 in [false, true] {
            let t0 = Instant::now();
            let req = get("/gen?stream=4&interval_ms=40");
            let resp = if h2 {
                h2_over(tcp(mock.addr).await).await.send_request(req).await
            } else {
                h1_over(tcp(mock.addr).await).await.send_request(req).await
            }
            .unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.headers()["content-type"], "text/event-stream");
            let (got, failed) = events(resp).await;
            assert!(!failed, "h2={h2}");
            assert_eq!(got.len(), 4, "h2={h2}");
            for (i, (_, e)) in got.iter().enumerate() {
                assert_eq!(e["token"], i, "h2={h2}");
                assert_eq!(e["backend"], "s");
            }
            // The server waits the interval before each event: the first cannot come
            // sooner than that after the request, nor the last sooner than 4 of them.
            assert!(got[0].0 - t0 >= interval, "h2={h2}");
            assert!(got[3].0 - t0 >= interval * 4, "h2={h2}");
            // Spread out, not one burst (a loose bound against loopback jitter).
            for w in got.windows(2) {
                assert!(w[1].0 - w[0].0 >= interval / 2, "h2={h2}");
            }
        }
    })
    .await;
    assert_eq!(mock.stats.streams.load(Relaxed), 2);
}

#[tokio::test]
async fn fail_after_aborts_an_http1_body_and_closes_the_connection() {
    let mock = MockServer::builder().start().unwrap();
    within(async {
        let mut c = h1_over(tcp(mock.addr).await).await;
        let resp = c
            .send_request(get("/?stream=5&interval_ms=5&fail_after=2"))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let (got, failed) = events(resp).await;
        assert_eq!(got.len(), 2);
        assert!(failed, "the client must see the body fail");
        assert!(c.ready().await.is_err(), "the connection is closed");

        // On the wire: chunked, two events, and no terminating zero-length chunk.
        let mut raw = tcp(mock.addr).await;
        raw.write_all(b"GET /?stream=3&fail_after=2 HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut bytes = Vec::new();
        raw.read_to_end(&mut bytes).await.unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("transfer-encoding: chunked"), "{text}");
        assert_eq!(text.matches("data: ").count(), 2, "{text}");
        assert!(
            text.ends_with("}\n\n\r\n"),
            "ends after the last event: {text:?}"
        );
    })
    .await;
    assert_eq!(mock.stats.aborted.load(Relaxed), 2);
}

#[tokio::test]
async fn fail_after_resets_the_h2_stream_but_not_the_connection() {
    let mock = MockServer::builder().start().unwrap();
    within(async {
        let mut c = h2_over(tcp(mock.addr).await).await;
        let resp = c
            .send_request(get("/?stream=5&interval_ms=5&fail_after=3"))
            .await
            .unwrap();
        let (got, failed) = events(resp).await;
        assert_eq!(got.len(), 3);
        assert!(failed, "the client must see the stream reset");
        // A reset ends one stream: the connection still serves.
        let resp = c.send_request(get("/after")).await.unwrap();
        assert_eq!(json(resp).await["path"], "/after");
        // fail_after=0: the header, then the reset.
        let resp = c
            .send_request(get("/?stream=2&fail_after=0"))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(events(resp).await, (vec![], true));
    })
    .await;
}

#[tokio::test]
async fn websocket_echoes_across_a_silence() {
    use tokio_tungstenite::tungstenite::Message;
    let mock = MockServer::builder().name("ws").start().unwrap();
    within(async {
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                format!("ws://{}/socket", mock.addr),
            )
            .unwrap();
        req.headers_mut()
            .insert("x-abgate-assignments", "exp=a".parse().unwrap());
        let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(resp.status(), 101);
        assert_eq!(resp.headers()["x-mock-backend"], "ws");
        assert_eq!(resp.headers()["x-seen-assignments"], "exp=a");
        ws.send(Message::text("one")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("one"));
        // Silence: the mock keeps the connection open on its own.
        tokio::time::sleep(Duration::from_millis(300)).await;
        ws.send(Message::text("two")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("two"));
        ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::binary(vec![1u8, 2, 3])
        );
        ws.close(None).await.unwrap();
    })
    .await;
    assert_eq!(mock.stats.websockets.load(Relaxed), 1);
    assert_eq!(mock.stats.ws_messages.load(Relaxed), 3);
}

fn tls_client(ca_pem: &str, alpn: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

#[tokio::test]
async fn tls_serves_h2_and_http1_by_alpn_to_a_client_trusting_the_test_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path()).unwrap();
    let other = TestPki::generate_other_ca(dir.path()).unwrap();
    let mock = MockServer::builder()
        .name("t")
        .tls(pki.tls_files())
        .start()
        .unwrap();
    within(async {
        for (alpn, name) in [(&b"h2"[..], "localhost"), (b"http/1.1", "127.0.0.1")] {
            let name = rustls::pki_types::ServerName::try_from(name).unwrap();
            let s = tls_client(&pki.ca_pem, alpn)
                .connect(name, tcp(mock.addr).await)
                .await
                .unwrap();
            assert_eq!(s.get_ref().1.alpn_protocol(), Some(alpn));
            let resp = if alpn == b"h2" {
                h2_over(s).await.send_request(get("/tls")).await
            } else {
                h1_over(s).await.send_request(get("/tls")).await
            }
            .unwrap();
            assert_eq!(resp.status(), 200);
            let body = json(resp).await;
            assert_eq!(body["tls"], true);
            let want = if alpn == b"h2" {
                "HTTP/2.0"
            } else {
                "HTTP/1.1"
            };
            assert_eq!(body["version"], want);
        }
        // A client that trusts another CA refuses the certificate.
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let refused = tls_client(&other.ca_pem, b"h2")
            .connect(name, tcp(mock.addr).await)
            .await;
        let Err(err) = refused else {
            panic!("a certificate from an unknown CA was accepted");
        };
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    })
    .await;
    assert_eq!(mock.requests(), 2);
}

#[test]
fn tls_files_that_do_not_load_fail_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = TlsFiles {
        cert: dir.path().join("nope.crt"),
        key: dir.path().join("nope.key"),
    };
    let err = MockServer::builder().tls(missing).start().err().unwrap();
    assert!(err.to_string().contains("nope.crt"), "{err}");
    let pki = TestPki::generate(dir.path()).unwrap();
    let other = TestPki::generate_other_ca(dir.path()).unwrap();
    let mismatched = TlsFiles {
        cert: pki.cert.clone(),
        key: other.key.clone(),
    };
    assert!(MockServer::builder().tls(mismatched).start().is_err());
}

#[test]
fn labels_follow_the_request_id_and_flip_for_the_configured_share() {
    let n = 20_000;
    let mut flipped = 0;
    for i in 0..n {
        let id = format!("req-{i}");
        let a: serde_json::Value = serde_json::from_str(&classify(id.as_bytes(), 0.0)).unwrap();
        let b: serde_json::Value = serde_json::from_str(&classify(id.as_bytes(), 0.05)).unwrap();
        assert_eq!(a["score"], b["score"]);
        assert_ne!(a["id"], b["id"], "ids are random");
        if a["label"] != b["label"] {
            flipped += 1;
        }
    }
    // 5% of 20,000 = 1000, sd ≈ 31: the hash is fixed, so this count is too.
    assert!((850..1150).contains(&flipped), "{flipped}");
}
