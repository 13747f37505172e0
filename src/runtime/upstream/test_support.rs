//! Helpers for the pool's unit tests: specs, and a backend that answers with a status the
//! test sets.

use crate::config::{HttpHealthCheck as HcSpec, Protocol, UpstreamSpec};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A socket address written as text.
pub(super) fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// An upstream at `hosts` that resolved to `addrs`, every other key at its default.
pub(super) fn spec(hosts: &[&str], addrs: &[&str], protocol: Protocol, tls: bool) -> UpstreamSpec {
    UpstreamSpec {
        name: Arc::from("m"),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        addrs: addrs.iter().map(|s| a(s)).collect(),
        connect_timeout: Duration::from_millis(700),
        read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(45),
        health_check_interval: Duration::from_secs(5),
        health_check: None,
        protocol,
        tls,
        sni: None,
        ca: None,
        verify: true,
        host: None,
        grpc_error_codes: 0,
        resolve_interval: Duration::from_secs(30),
    }
}

/// An HTTP check of `/health` every 200 ms expecting 200, `failures` in a row.
pub(super) fn http_check(failures: usize) -> Option<HcSpec> {
    Some(HcSpec {
        path: "/health".into(),
        interval: Duration::from_millis(200),
        expect: vec![200],
        failures,
    })
}

/// A backend answering every request with `status` (HTTP/1.1 or HTTP/2, over TLS
/// with `tls`), recording each request's version and host.
pub(super) struct Backend {
    pub addr: SocketAddr,
    pub status: Arc<AtomicU16>,
    pub seen: Arc<Mutex<Vec<(http::Version, String)>>>,
    pub hits: Arc<AtomicUsize>,
}

pub(super) async fn backend(tls: Option<tokio_rustls::TlsAcceptor>) -> Backend {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b = Backend {
        addr: listener.local_addr().unwrap(),
        status: Arc::new(AtomicU16::new(200)),
        seen: Arc::default(),
        hits: Arc::default(),
    };
    let (status, seen, hits) = (b.status.clone(), b.seen.clone(), b.hits.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            hits.fetch_add(1, Relaxed);
            let (status, seen, tls) = (status.clone(), seen.clone(), tls.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                    let host = req
                        .uri()
                        .authority()
                        .map(|a| a.to_string())
                        .or_else(|| {
                            req.headers()
                                .get("host")
                                .map(|h| h.to_str().unwrap().to_string())
                        })
                        .unwrap_or_default();
                    seen.lock().unwrap().push((req.version(), host));
                    let _body: hyper::body::Incoming = req.into_body();
                    let st = status.load(Relaxed);
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(st)
                                .body(http_body_util::Full::new(bytes::Bytes::from("ok")))
                                .unwrap(),
                        )
                    }
                });
                let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match tls {
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(tcp).await {
                            let _ = server.serve_connection(TokioIo::new(s), svc).await;
                        }
                    }
                    None => {
                        let _ = server.serve_connection(TokioIo::new(tcp), svc).await;
                    }
                }
            });
        }
    });
    b
}
