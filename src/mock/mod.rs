//! A mock model server: configurable latency, error rate and response headers; echoes
//! what it received (path, protocol, `x-abgate-assignments`, `x-` headers) as JSON.
//!
//! Used by the integration tests, the benchmarks and `abgate demo`; the standalone
//! binaries are `abgate mock-model` and `examples/mock_model.rs`. It runs on its own
//! thread and runtime, so synchronous tests can start it with [`MockServer::builder`].
//!
//! One port speaks HTTP/1.1 and HTTP/2 with prior knowledge (h2c), or, with
//! [`MockOptions::tls`], TLS offering ALPN `h2` and `http/1.1`. Each request picks its
//! behaviour with query parameters, on any path:
//!
//! | parameter | effect |
//! | --- | --- |
//! | `status=CODE` | answer with that status (the echo JSON, or the stream below) |
//! | `stall_ms=N` | wait N ms before sending the response header |
//! | `stream=N&interval_ms=M` | `text/event-stream` of N events `data: {"token":i,"backend":"NAME"}\n\n`, each flushed on its own M ms after the previous one (the first M ms after the request) |
//! | `fail_after=K` (with `stream`) | after K events (all N if K ≥ N) the body ends with an error: HTTP/1.1 closes the connection without the last chunk, HTTP/2 resets the stream |
//!
//! With [`MockBuilder::labels`] the JSON answer is a classifier's instead of the echo:
//! `{"id": random, "label": from x-request-id, "score": from x-request-id}`.
//!
//! A bad value is answered 400. An injected error (the error rate) is a 500 with the
//! echo JSON, whatever the query asks. A `GET` with `Upgrade: websocket` is answered
//! 101 and echoes every text and binary message back; it never times out.
//!
//! [`grpc::MockGrpcServer`] is the gRPC counterpart (the standard health service), and
//! [`pki::TestPki`] makes a throwaway CA and `localhost` certificate for TLS tests.

pub mod grpc;
pub mod pki;
mod query;
mod stream;

use query::Query;
use stream::event_stream;

pub use grpc::{MockGrpcServer, MockGrpcStats};
pub use pki::TestPki;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;

/// Errors of a response body (a stream told to fail).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body of the mock.
pub type MockBody = BoxBody<Bytes, BoxError>;

/// A PEM certificate chain and its private key, for serving TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain (leaf first).
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// How the mock behaves.
#[derive(Debug, Clone)]
pub struct MockOptions {
    /// Name echoed in responses (`backend`).
    pub name: String,
    /// Added latency per request.
    pub latency: Duration,
    /// Share of requests answered 500.
    pub error_rate: f64,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    /// Spread of the numeric values of `headers`: each response sends the value times a
    /// log-normal factor of mean 1 whose log has this standard deviation, rounded to a
    /// whole number (0: the value as configured). Gives the demo's outcomes (tokens
    /// generated) the noise of real ones.
    pub header_spread: f64,
    /// Address to bind (`127.0.0.1:0` by default).
    pub listen: String,
    /// Serve TLS with this certificate (ALPN `h2` and `http/1.1`); plain TCP when `None`.
    pub tls: Option<TlsFiles>,
    /// Answer like a classifier ([`MockBuilder::labels`]): the share of labels changed,
    /// or `None` for the plain echo.
    pub label_flip: Option<f64>,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            name: "mock".into(),
            latency: Duration::ZERO,
            error_rate: 0.0,
            headers: Vec::new(),
            header_spread: 0.0,
            listen: "127.0.0.1:0".into(),
            tls: None,
            label_flip: None,
        }
    }
}

/// Counters of what the mock saw.
#[derive(Debug, Default)]
pub struct MockStats {
    /// Requests received (WebSocket upgrades included).
    pub requests: AtomicU64,
    /// Requests answered 500 by the error rate.
    pub errors: AtomicU64,
    /// Requests that carried `x-abgate-assignments`.
    pub with_assignments: AtomicU64,
    /// Requests that arrived over HTTP/2.
    pub http2: AtomicU64,
    /// Event streams started (`stream=N`).
    pub streams: AtomicU64,
    /// Event streams ended with an error (`fail_after=K`).
    pub aborted: AtomicU64,
    /// WebSocket upgrades accepted.
    pub websockets: AtomicU64,
    /// WebSocket messages echoed.
    pub ws_messages: AtomicU64,
}

/// Live knobs that tests can turn while the server runs.
#[derive(Debug, Default)]
pub struct MockKnobs {
    /// Error rate in 1/10000.
    pub error_bp: AtomicU64,
    /// Latency in microseconds.
    pub latency_us: AtomicU64,
}

/// A running mock server.
pub struct MockServer {
    /// Bound address.
    pub addr: SocketAddr,
    /// What it saw.
    pub stats: Arc<MockStats>,
    /// Knobs.
    pub knobs: Arc<MockKnobs>,
    stop: Arc<AtomicBool>,
    stop_tx: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Builder for [`MockServer`].
#[derive(Debug, Default)]
pub struct MockBuilder {
    opts: MockOptions,
}

impl MockBuilder {
    /// Name echoed in responses.
    pub fn name(mut self, n: &str) -> Self {
        self.opts.name = n.into();
        self
    }
    /// Added latency.
    pub fn latency(mut self, d: Duration) -> Self {
        self.opts.latency = d;
        self
    }
    /// Share of 500 responses.
    pub fn error_rate(mut self, r: f64) -> Self {
        self.opts.error_rate = r;
        self
    }
    /// Add a response header.
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.opts.headers.push((k.into(), v.into()));
        self
    }
    /// Spread numeric header values (see [`MockOptions::header_spread`]).
    pub fn header_spread(mut self, sigma: f64) -> Self {
        self.opts.header_spread = sigma;
        self
    }
    /// Address to bind instead of a free loopback port.
    pub fn listen(mut self, addr: &str) -> Self {
        self.opts.listen = addr.into();
        self
    }
    /// Serve TLS with this certificate and key.
    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.opts.tls = Some(files);
        self
    }
    /// Answer like a classifier: the JSON also carries `label`, a function of the
    /// request's `x-request-id` (so two mocks agree on it), changed to another label for
    /// the share `flip` of ids (chosen by the id's hash, so the same ids every run), and
    /// `id`, random in every response. Two mocks with flips 0 and 0.05 disagree on
    /// `/label` for 5% of request ids (the shadow comparison's test).
    pub fn labels(mut self, flip: f64) -> Self {
        self.opts.label_flip = Some(flip);
        self
    }
    /// Start (on a free loopback port unless [`MockBuilder::listen`] said otherwise).
    pub fn start(self) -> std::io::Result<MockServer> {
        MockServer::start(self.opts)
    }
}

impl MockServer {
    /// A builder with defaults (no latency, no errors, plain TCP).
    pub fn builder() -> MockBuilder {
        MockBuilder::default()
    }

    /// Start a mock server on its own thread. Fails if the address cannot be bound or
    /// the TLS files cannot be read or do not belong together.
    pub fn start(opts: MockOptions) -> std::io::Result<MockServer> {
        let tls = opts.tls.as_ref().map(tls_acceptor).transpose()?;
        let std_listener = std::net::TcpListener::bind(&opts.listen)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let stats = Arc::new(MockStats::default());
        let knobs = Arc::new(MockKnobs {
            error_bp: AtomicU64::new((opts.error_rate * 10_000.0).round() as u64),
            latency_us: AtomicU64::new(opts.latency.as_micros() as u64),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (s, k) = (stats.clone(), knobs.clone());
        let thread = std::thread::Builder::new()
            .name(format!("mock-{}", opts.name))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("mock runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(std_listener).expect("mock listener");
                    serve_with(listener, Arc::new(opts), s, k, tls, stop_rx).await;
                });
            })?;
        Ok(MockServer {
            addr,
            stats,
            knobs,
            stop,
            stop_tx: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Change the error rate while running.
    pub fn set_error_rate(&self, r: f64) {
        self.knobs
            .error_bp
            .store((r * 10_000.0).round() as u64, Relaxed);
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Relaxed)
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TLS acceptor for `files`: ring provider, no client authentication, ALPN `h2` and
/// `http/1.1`.
pub fn tls_acceptor(files: &TlsFiles) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what}: {e}"))
    };
    let cert_pem = std::fs::read(&files.cert)
        .map_err(|e| invalid(&format!("cannot read `{}`", files.cert.display()), &e))?;
    let certs = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&format!("`{}`", files.cert.display()), &e))?;
    if certs.is_empty() {
        return Err(invalid(
            &format!("`{}`", files.cert.display()),
            &"no PEM certificate",
        ));
    }
    let key_pem = std::fs::read(&files.key)
        .map_err(|e| invalid(&format!("cannot read `{}`", files.key.display()), &e))?;
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| invalid(&format!("`{}`", files.key.display()), &e))?
        .ok_or_else(|| invalid(&format!("`{}`", files.key.display()), &"no PEM private key"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("TLS versions", &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid("certificate and key", &e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serve until `stop` fires (or forever if it is dropped unsent). With `opts.tls`, TLS
/// files that cannot be loaded end it at once with a message on stderr
/// ([`MockServer::start`] reports them as an error instead).
pub async fn serve(
    listener: tokio::net::TcpListener,
    opts: Arc<MockOptions>,
    stats: Arc<MockStats>,
    knobs: Arc<MockKnobs>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let tls = match opts.tls.as_ref().map(tls_acceptor).transpose() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mock {}: {e}", opts.name);
            return;
        }
    };
    serve_with(listener, opts, stats, knobs, tls, stop).await
}

/// What every connection of one server shares.
struct Ctx {
    opts: Arc<MockOptions>,
    stats: Arc<MockStats>,
    knobs: Arc<MockKnobs>,
    counter: AtomicU64,
}

async fn serve_with(
    listener: tokio::net::TcpListener,
    opts: Arc<MockOptions>,
    stats: Arc<MockStats>,
    knobs: Arc<MockKnobs>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let ctx = Arc::new(Ctx {
        opts,
        stats,
        knobs,
        counter: AtomicU64::new(0),
    });
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
            _ = &mut stop => return,
        };
        let _ = stream.set_nodelay(true);
        let (ctx, tls) = (ctx.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => connection(stream, ctx, false).await,
                Some(acceptor) => {
                    if let Ok(s) = acceptor.accept(stream).await {
                        connection(s, ctx, true).await
                    }
                }
            }
        });
    }
}

/// HTTP/1.1 (with upgrades) or HTTP/2, whichever the client speaks first.
async fn connection<IO>(io: IO, ctx: Arc<Ctx>, tls: bool)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: Request<Incoming>| {
        let ctx = ctx.clone();
        async move { Ok::<_, std::convert::Infallible>(answer(req, &ctx, tls).await) }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .await;
}

async fn answer(mut req: Request<Incoming>, ctx: &Ctx, tls: bool) -> Response<MockBody> {
    let (opts, stats, knobs) = (&*ctx.opts, &*ctx.stats, &*ctx.knobs);
    stats.requests.fetch_add(1, Relaxed);
    if req.version() == Version::HTTP_2 {
        stats.http2.fetch_add(1, Relaxed);
    }
    let assignments = req
        .headers()
        .get("x-abgate-assignments")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if assignments.is_some() {
        stats.with_assignments.fetch_add(1, Relaxed);
    }
    let query = match Query::parse(req.uri().query()) {
        Ok(q) => q,
        Err(m) => return respond(opts, StatusCode::BAD_REQUEST, "text/plain", full(m)),
    };
    let latency = knobs.latency_us.load(Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_micros(latency)).await;
    }
    if !query.stall.is_zero() {
        tokio::time::sleep(query.stall).await;
    }
    if is_websocket(&req) {
        return websocket(&mut req, ctx, assignments.as_deref());
    }
    let (parts, body) = req.into_parts();
    let body_len = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let n = ctx.counter.fetch_add(1, Relaxed);
    let bp = knobs.error_bp.load(Relaxed);
    // Deterministic spread of errors: the n-th request fails if its hash falls under the rate.
    let fail = bp > 0 && xxhash_rust::xxh3::xxh3_64(&n.to_le_bytes()) % 10_000 < bp;
    if !fail {
        if let Some(events) = query.stream {
            stats.streams.fetch_add(1, Relaxed);
            let body = event_stream(ctx, events, query.interval, query.fail_after);
            let status = query.status.unwrap_or(StatusCode::OK);
            let mut resp = respond(opts, status, "text/event-stream", body);
            resp.headers_mut()
                .insert("cache-control", http::HeaderValue::from_static("no-cache"));
            return resp;
        }
    }
    let echo_headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("x-"))
        .map(|(k, v)| {
            (
                k.to_string(),
                serde_json::Value::String(v.to_str().unwrap_or("").to_string()),
            )
        })
        .collect();
    if let Some(flip) = opts.label_flip {
        let id = parts
            .headers
            .get("x-request-id")
            .map_or(&b""[..], |v| v.as_bytes());
        let status = query.status.unwrap_or(StatusCode::OK);
        return respond(opts, status, "application/json", full(classify(id, flip)));
    }
    let body = serde_json::json!({
        "backend": opts.name,
        "path": parts.uri.path(),
        "method": parts.method.as_str(),
        "version": format!("{:?}", parts.version),
        "tls": tls,
        "assignments": assignments,
        "headers": echo_headers,
        "body_bytes": body_len,
    })
    .to_string();
    let status = if fail {
        stats.errors.fetch_add(1, Relaxed);
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        query.status.unwrap_or(StatusCode::OK)
    };
    respond(opts, status, "application/json", full(body))
}

/// The classifier answer of [`MockBuilder::labels`] for request id `id`.
fn classify(id: &[u8], flip: f64) -> String {
    const LABELS: [&str; 4] = ["cat", "dog", "bird", "fish"];
    let h = xxhash_rust::xxh3::xxh3_64(id);
    let mut label = (h % 4) as usize;
    let draw =
        xxhash_rust::xxh3::xxh3_64_with_seed(id, 0x5eed) as f64 / 18_446_744_073_709_551_616.0;
    if draw < flip {
        label = (label + 1) % 4;
    }
    serde_json::json!({
        "id": format!("{:016x}", rand::random::<u64>()),
        "label": LABELS[label],
        "score": 0.5 + (h % 1000) as f64 / 2000.0,
    })
    .to_string()
}

fn full(b: impl Into<Bytes>) -> MockBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// A response with the mock's own headers (`x-mock-backend` and the configured ones).
fn respond(
    opts: &MockOptions,
    status: StatusCode,
    content_type: &str,
    body: MockBody,
) -> Response<MockBody> {
    let mut b = Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("x-mock-backend", opts.name.as_str());
    for (k, v) in &opts.headers {
        match v.parse::<f64>() {
            Ok(x) if opts.header_spread > 0.0 => {
                let value = (x * lognormal_factor(opts.header_spread)).round();
                b = b.header(k.as_str(), value.to_string());
            }
            _ => b = b.header(k.as_str(), v.as_str()),
        }
    }
    b.body(body)
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

/// A draw of exp(σZ − σ²/2), Z standard normal (Box–Muller): a log-normal factor of mean 1.
fn lognormal_factor(sigma: f64) -> f64 {
    let (u1, u2): (f64, f64) = (rand::random(), rand::random());
    let z = (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    (sigma * z - sigma * sigma / 2.0).exp()
}

fn is_websocket(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
        })
}

/// 101 and a WebSocket echo on the upgraded connection (text and binary messages are
/// sent back as they came; pings are answered; no timeouts).
fn websocket(
    req: &mut Request<Incoming>,
    ctx: &Ctx,
    assignments: Option<&str>,
) -> Response<MockBody> {
    let opts = &*ctx.opts;
    let key = req.headers().get("sec-websocket-key").map(|k| k.as_bytes());
    let Some(key) = key.filter(|_| req.method() == http::Method::GET) else {
        return respond(
            opts,
            StatusCode::BAD_REQUEST,
            "text/plain",
            full("mock: a WebSocket upgrade needs GET and Sec-WebSocket-Key"),
        );
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key);
    let on_upgrade = hyper::upgrade::on(req);
    let stats = ctx.stats.clone();
    stats.websockets.fetch_add(1, Relaxed);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        use tokio_tungstenite::tungstenite::Message;
        while let Some(Ok(msg)) = ws.next().await {
            match msg {
                Message::Text(_) | Message::Binary(_) => {
                    stats.ws_messages.fetch_add(1, Relaxed);
                    if ws.send(msg).await.is_err() {
                        return;
                    }
                }
                // Pings are answered and a close is returned by tungstenite itself.
                _ => {}
            }
        }
    });
    let mut b = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::CONNECTION, "upgrade")
        .header("sec-websocket-accept", accept)
        .header("x-mock-backend", opts.name.as_str());
    if let Some(a) = assignments {
        b = b.header("x-seen-assignments", a);
    }
    b.body(full(Bytes::new()))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

#[cfg(test)]
mod tests;
