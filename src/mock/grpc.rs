//! A mock gRPC backend: the standard health service (`grpc.health.v1.Health`) over h2c,
//! or TLS, on its own thread and runtime like [`super::MockServer`].
//!
//! - `Check` answers `SERVING`; [`MockGrpcServer::set_unavailable`] makes it (and
//!   `Watch`) fail with `UNAVAILABLE` (grpc-status 14) instead.
//! - `Watch` streams `x-stream-n` messages (default 3), each `x-stream-interval-ms`
//!   after the previous one (default 20; the first that long after the call); with
//!   `x-stream-fail-after: K` the stream ends with `UNAVAILABLE` after K of them.
//! - Every response, error or not, carries `x-backend: NAME` and, when the request had
//!   `x-abgate-assignments`, its value as `x-seen-assignments`.
//! - A request with `x-sleep-ms: N` is answered N ms late (deadline tests).

use super::TlsFiles;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// Messages `Watch` sends when the request does not say (`x-stream-n`).
pub const DEFAULT_STREAM_N: u64 = 3;
/// Gap between `Watch` messages when the request does not say (`x-stream-interval-ms`).
pub const DEFAULT_STREAM_INTERVAL: Duration = Duration::from_millis(20);

/// How the gRPC mock behaves.
#[derive(Debug, Clone)]
pub struct MockGrpcOptions {
    /// Sent back as `x-backend` (must be a valid ASCII metadata value).
    pub name: String,
    /// Address to bind (`127.0.0.1:0` by default).
    pub listen: String,
    /// Serve TLS (ALPN `h2`) with this certificate; h2c when `None`.
    pub tls: Option<TlsFiles>,
}

impl Default for MockGrpcOptions {
    fn default() -> Self {
        MockGrpcOptions {
            name: "mock".into(),
            listen: "127.0.0.1:0".into(),
            tls: None,
        }
    }
}

/// Counters of the calls the gRPC mock received.
#[derive(Debug, Default)]
pub struct MockGrpcStats {
    /// `Check` calls.
    pub checks: AtomicU64,
    /// `Watch` calls.
    pub watches: AtomicU64,
    /// Calls answered `UNAVAILABLE` (the knob; not streams told to fail).
    pub unavailable: AtomicU64,
    /// Calls that carried `x-abgate-assignments`.
    pub with_assignments: AtomicU64,
    /// `Watch` messages sent.
    pub messages: AtomicU64,
}

/// Live knobs of the gRPC mock.
#[derive(Debug, Default)]
pub struct MockGrpcKnobs {
    /// Answer every call `UNAVAILABLE`.
    pub unavailable: AtomicBool,
}

/// A running gRPC mock; stops when dropped.
pub struct MockGrpcServer {
    /// Bound address.
    pub addr: SocketAddr,
    /// What it saw.
    pub stats: Arc<MockGrpcStats>,
    /// Knobs.
    pub knobs: Arc<MockGrpcKnobs>,
    stop_tx: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Builder for [`MockGrpcServer`].
#[derive(Debug, Default)]
pub struct MockGrpcBuilder {
    opts: MockGrpcOptions,
}

impl MockGrpcBuilder {
    /// Sent back as `x-backend`.
    pub fn name(mut self, n: &str) -> Self {
        self.opts.name = n.into();
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
    /// Start it.
    pub fn start(self) -> std::io::Result<MockGrpcServer> {
        MockGrpcServer::start(self.opts)
    }
}

impl MockGrpcServer {
    /// A builder with defaults (h2c on a free loopback port).
    pub fn builder() -> MockGrpcBuilder {
        MockGrpcBuilder::default()
    }

    /// Start on its own thread. Fails if the name is not a valid metadata value, the
    /// address cannot be bound or the TLS files cannot be loaded.
    pub fn start(opts: MockGrpcOptions) -> std::io::Result<MockGrpcServer> {
        let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
        let name = MetadataValue::try_from(opts.name.as_str())
            .map_err(|_| invalid(format!("gRPC mock name `{}`: not ASCII", opts.name)))?;
        let mut server = tonic::transport::Server::builder();
        if let Some(files) = &opts.tls {
            // Checks that the files load and belong together, with a clear message.
            super::tls_acceptor(files)?;
            let identity = tonic::transport::Identity::from_pem(
                std::fs::read(&files.cert)?,
                std::fs::read(&files.key)?,
            );
            server = server
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .map_err(|e| invalid(format!("gRPC mock TLS: {e}")))?;
        }
        let std_listener = std::net::TcpListener::bind(&opts.listen)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let stats = Arc::new(MockGrpcStats::default());
        let knobs = Arc::new(MockGrpcKnobs::default());
        let service = MockHealth {
            name,
            stats: stats.clone(),
            knobs: knobs.clone(),
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("mock-grpc-{}", opts.name))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("gRPC mock runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(std_listener)
                        .expect("gRPC mock listener");
                    let incoming = tonic::transport::server::TcpIncoming::from(listener)
                        .with_nodelay(Some(true));
                    // Not tonic's graceful shutdown: it would wait for every client
                    // (a proxy's pooled connection) to leave. Dropping the runtime at
                    // the end of this thread closes the open connections instead.
                    let serving = server
                        .add_service(HealthServer::new(service))
                        .serve_with_incoming(incoming);
                    tokio::select! {
                        _ = serving => {}
                        _ = stop_rx => {}
                    }
                });
            })?;
        Ok(MockGrpcServer {
            addr,
            stats,
            knobs,
            stop_tx: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Answer every call `UNAVAILABLE` (or stop doing so).
    pub fn set_unavailable(&self, on: bool) {
        self.knobs.unavailable.store(on, Relaxed);
    }

    /// Calls received so far (`Check` and `Watch`).
    pub fn calls(&self) -> u64 {
        self.stats.checks.load(Relaxed) + self.stats.watches.load(Relaxed)
    }
}

impl Drop for MockGrpcServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The health service with the mock's behaviours.
struct MockHealth {
    name: MetadataValue<tonic::metadata::Ascii>,
    stats: Arc<MockGrpcStats>,
    knobs: Arc<MockGrpcKnobs>,
}

fn number(meta: &MetadataMap, key: &str) -> Result<Option<u64>, Status> {
    match meta.get(key) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| Status::invalid_argument(format!("mock: `{key}` is not a number"))),
    }
}

impl MockHealth {
    /// `x-backend` and `x-seen-assignments` for a response to `request`.
    fn tag(&self, request: &MetadataMap, out: &mut MetadataMap) {
        out.insert("x-backend", self.name.clone());
        if let Some(a) = request.get("x-abgate-assignments") {
            out.insert("x-seen-assignments", a.clone());
        }
    }

    /// What every call does first: count, sleep `x-sleep-ms`, fail if told to.
    async fn begin(&self, meta: &MetadataMap) -> Result<(), Status> {
        if meta.contains_key("x-abgate-assignments") {
            self.stats.with_assignments.fetch_add(1, Relaxed);
        }
        if let Some(ms) = number(meta, "x-sleep-ms")? {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if self.knobs.unavailable.load(Relaxed) {
            self.stats.unavailable.fetch_add(1, Relaxed);
            return Err(Status::unavailable("mock: unavailable (knob)"));
        }
        Ok(())
    }

    /// `status` with this mock's metadata.
    fn tagged(&self, request: &MetadataMap, mut status: Status) -> Status {
        self.tag(request, status.metadata_mut());
        status
    }
}

#[tonic::async_trait]
impl Health for MockHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.stats.checks.fetch_add(1, Relaxed);
        let meta = request.metadata();
        self.begin(meta).await.map_err(|s| self.tagged(meta, s))?;
        let mut resp = Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        });
        self.tag(meta, resp.metadata_mut());
        Ok(resp)
    }

    type WatchStream = ReceiverStream<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.stats.watches.fetch_add(1, Relaxed);
        let meta = request.metadata();
        let parsed = async {
            self.begin(meta).await?;
            Ok::<_, Status>((
                number(meta, "x-stream-n")?.unwrap_or(DEFAULT_STREAM_N),
                number(meta, "x-stream-interval-ms")?
                    .map(Duration::from_millis)
                    .unwrap_or(DEFAULT_STREAM_INTERVAL),
                number(meta, "x-stream-fail-after")?,
            ))
        };
        let (n, interval, fail_after) = parsed.await.map_err(|s| self.tagged(meta, s))?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let stats = self.stats.clone();
        tokio::spawn(async move {
            let sent = n.min(fail_after.unwrap_or(u64::MAX));
            for _ in 0..sent {
                tokio::time::sleep(interval).await;
                let msg = HealthCheckResponse {
                    status: ServingStatus::Serving as i32,
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return; // the client went away
                }
                stats.messages.fetch_add(1, Relaxed);
            }
            if fail_after.is_some() {
                let status = Status::unavailable(format!(
                    "mock: stream aborted after {sent} messages (x-stream-fail-after)"
                ));
                let _ = tx.send(Err(status)).await;
            }
        });
        let mut resp = Response::new(ReceiverStream::new(rx));
        self.tag(meta, resp.metadata_mut());
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
    use tonic_health::pb::health_client::HealthClient;

    async fn client(addr: SocketAddr) -> HealthClient<Channel> {
        let ch = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        HealthClient::new(ch)
    }

    fn request(meta: &[(&'static str, &str)]) -> Request<HealthCheckRequest> {
        let mut r = Request::new(HealthCheckRequest {
            service: String::new(),
        });
        for (k, v) in meta {
            r.metadata_mut().insert(*k, v.parse().unwrap());
        }
        r
    }

    #[tokio::test]
    async fn check_serves_then_the_knob_makes_it_unavailable_with_metadata() {
        let mock = MockGrpcServer::builder().name("g1").start().unwrap();
        let mut c = client(mock.addr).await;
        let resp = c
            .check(request(&[("x-abgate-assignments", "exp=b")]))
            .await
            .unwrap();
        assert_eq!(resp.metadata().get("x-backend").unwrap(), "g1");
        assert_eq!(resp.metadata().get("x-seen-assignments").unwrap(), "exp=b");
        assert_eq!(resp.get_ref().status, ServingStatus::Serving as i32);

        mock.set_unavailable(true);
        let err = c
            .check(request(&[("x-abgate-assignments", "exp=b")]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert_eq!(err.metadata().get("x-backend").unwrap(), "g1");
        assert_eq!(err.metadata().get("x-seen-assignments").unwrap(), "exp=b");
        assert_eq!(mock.stats.checks.load(Relaxed), 2);
        assert_eq!(mock.stats.unavailable.load(Relaxed), 1);
        assert_eq!(mock.stats.with_assignments.load(Relaxed), 2);
        mock.set_unavailable(false);
        assert!(c.check(request(&[])).await.is_ok());
    }

    #[tokio::test]
    async fn watch_streams_n_messages_at_the_interval() {
        let mock = MockGrpcServer::builder().name("g2").start().unwrap();
        let mut c = client(mock.addr).await;
        let t0 = std::time::Instant::now();
        let resp = c
            .watch(request(&[
                ("x-stream-n", "4"),
                ("x-stream-interval-ms", "30"),
            ]))
            .await
            .unwrap();
        assert_eq!(resp.metadata().get("x-backend").unwrap(), "g2");
        let mut stream = resp.into_inner();
        let mut got = 0;
        while let Some(m) = stream.message().await.unwrap() {
            assert_eq!(m.status, ServingStatus::Serving as i32);
            got += 1;
        }
        assert_eq!(got, 4);
        assert!(t0.elapsed() >= Duration::from_millis(4 * 30));

        // Defaults, then a stream told to fail after one message.
        let mut stream = c.watch(request(&[])).await.unwrap().into_inner();
        let mut got = 0;
        while stream.message().await.unwrap().is_some() {
            got += 1;
        }
        assert_eq!(got, DEFAULT_STREAM_N);
        let mut stream = c
            .watch(request(&[("x-stream-fail-after", "1")]))
            .await
            .unwrap()
            .into_inner();
        assert!(stream.message().await.unwrap().is_some());
        let err = stream.message().await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert_eq!(mock.stats.watches.load(Relaxed), 3);
    }

    #[tokio::test]
    async fn sleep_metadata_delays_the_answer_past_a_deadline() {
        let mock = MockGrpcServer::builder().start().unwrap();
        let mut c = client(mock.addr).await;
        let t0 = std::time::Instant::now();
        c.check(request(&[("x-sleep-ms", "120")])).await.unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(120));
        // With a deadline shorter than the sleep the call fails at the deadline (tonic's
        // server honours `grpc-timeout` itself and answers CANCELLED; a client or proxy
        // that times out first reports DEADLINE_EXCEEDED).
        let mut r = request(&[("x-sleep-ms", "1000")]);
        r.set_timeout(Duration::from_millis(50));
        let t0 = std::time::Instant::now();
        let err = c.check(r).await.unwrap_err();
        assert!(t0.elapsed() < Duration::from_millis(900));
        assert!(
            matches!(
                err.code(),
                tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn tls_check_with_the_test_ca_and_refusal_with_another() {
        let dir = tempfile::tempdir().unwrap();
        let pki = super::super::TestPki::generate(dir.path()).unwrap();
        let other = super::super::TestPki::generate_other_ca(dir.path()).unwrap();
        let mock = MockGrpcServer::builder()
            .name("gtls")
            .tls(pki.tls_files())
            .start()
            .unwrap();
        let endpoint = |ca: &str| {
            Endpoint::from_shared(format!("https://127.0.0.1:{}", mock.addr.port()))
                .unwrap()
                .tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(ca))
                        .domain_name("localhost"),
                )
                .unwrap()
        };
        let ch = endpoint(&pki.ca_pem).connect().await.unwrap();
        let resp = HealthClient::new(ch).check(request(&[])).await.unwrap();
        assert_eq!(resp.metadata().get("x-backend").unwrap(), "gtls");
        assert!(endpoint(&other.ca_pem).connect().await.is_err());
    }
}
