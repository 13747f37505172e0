//! A mock model server: configurable latency, error rate and response headers; echoes
//! what it received (path, `x-abgate-assignments`, variant headers) as JSON.
//!
//! Used by the integration tests, the benchmarks and `abgate demo`; the standalone
//! binary is `examples/mock_model.rs`. It runs on its own thread and runtime, so
//! synchronous tests can start it with [`MockServer::builder`].

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

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
    /// Address to bind (`127.0.0.1:0` by default).
    pub listen: String,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            name: "mock".into(),
            latency: Duration::ZERO,
            error_rate: 0.0,
            headers: Vec::new(),
            listen: "127.0.0.1:0".into(),
        }
    }
}

/// Counters of what the mock saw.
#[derive(Debug, Default)]
pub struct MockStats {
    /// Requests received.
    pub requests: AtomicU64,
    /// Requests answered 500.
    pub errors: AtomicU64,
    /// Requests that carried `x-abgate-assignments`.
    pub with_assignments: AtomicU64,
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
    /// Start on a free loopback port.
    pub fn start(self) -> std::io::Result<MockServer> {
        MockServer::start(self.opts)
    }
}

impl MockServer {
    /// A builder with defaults (no latency, no errors).
    pub fn builder() -> MockBuilder {
        MockBuilder::default()
    }

    /// Start a mock server on its own thread.
    pub fn start(opts: MockOptions) -> std::io::Result<MockServer> {
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
                    serve(listener, Arc::new(opts), s, k, stop_rx).await;
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

/// Serve until `stop` fires (or forever if it is dropped unsent).
pub async fn serve(
    listener: tokio::net::TcpListener,
    opts: Arc<MockOptions>,
    stats: Arc<MockStats>,
    knobs: Arc<MockKnobs>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let counter = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
            _ = &mut stop => return,
        };
        let _ = stream.set_nodelay(true);
        let (opts, stats, knobs, counter) =
            (opts.clone(), stats.clone(), knobs.clone(), counter.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let (opts, stats, knobs, counter) =
                    (opts.clone(), stats.clone(), knobs.clone(), counter.clone());
                async move {
                    Ok::<_, std::convert::Infallible>(
                        answer(req, &opts, &stats, &knobs, &counter).await,
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    opts: &MockOptions,
    stats: &MockStats,
    knobs: &MockKnobs,
    counter: &AtomicU64,
) -> Response<Full<Bytes>> {
    stats.requests.fetch_add(1, Relaxed);
    let (parts, body) = req.into_parts();
    let body_len = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let latency = knobs.latency_us.load(Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_micros(latency)).await;
    }
    let assignments = parts
        .headers
        .get("x-abgate-assignments")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if assignments.is_some() {
        stats.with_assignments.fetch_add(1, Relaxed);
    }
    let n = counter.fetch_add(1, Relaxed);
    let bp = knobs.error_bp.load(Relaxed);
    // Deterministic spread of errors: the n-th request fails if its hash falls under the rate.
    let fail = bp > 0 && xxhash_rust::xxh3::xxh3_64(&n.to_le_bytes()) % 10_000 < bp;
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
    let body = serde_json::json!({
        "backend": opts.name,
        "path": parts.uri.path(),
        "method": parts.method.as_str(),
        "assignments": assignments,
        "headers": echo_headers,
        "body_bytes": body_len,
    })
    .to_string();
    let mut b = Response::builder()
        .status(if fail { 500 } else { 200 })
        .header("content-type", "application/json")
        .header("x-mock-backend", opts.name.as_str());
    for (k, v) in &opts.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    if fail {
        stats.errors.fetch_add(1, Relaxed);
    }
    b.body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}
